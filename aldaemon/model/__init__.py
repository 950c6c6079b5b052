"""The model side: the classifier protocol, the default classifier, training and scoring
jobs, their artifacts, and the worker process that runs them.

Import map (the main process stays free of scikit-learn):
    protocol   TextClassifier, load_factory        main process and worker
    requests   SingleLabelTraining, ..., ScoringRequest   main process and worker
    results    TrainingResult, ScoredPool          main process and worker
    worker     ModelWorker                         main process
    training   run(request): the jobs, evaluate    worker (and tests, benchmarks)
    artifacts  atomic save, load                   worker
    default    make_text_classifier                worker
"""

"""The long-running service: everything `aldaemon run` adds around one project's cycle.

    runtime.py   shared resources (store, gateway, worker, metrics) and the runners
    runner.py    ProjectRunner: one project's lock, scheduled runs, rerun flag, health
                 transitions, `cycle.finished`, prune task
    health.py    ProjectHealth transitions, HealthReport, what /healthz says
    daemon.py    the shell: signals, SIGHUP reload, watchdog, shutdown
    schedule.py  the APScheduler jobs: a poll per project, a cron run when configured
    debounce.py  webhook bursts -> one poll request per project
    http.py      HttpEdge: POST /webhook, GET /healthz, GET /metrics
    metrics.py   the Prometheus registry
    logs.py      structlog setup and secret scrubbing
    systemd.py   sd_notify

The loop (`aldaemon.cycle`), the store and the Label Studio gateway never import this
package; it imports them.
"""

"""A small ML backend speaking Label Studio 1.23's protocol: see README.md in this folder."""

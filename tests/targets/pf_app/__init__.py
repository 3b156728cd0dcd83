"""A WSGI app for the pre-fork server tests (gunicorn); see tests/test_prefork_gunicorn.py."""

"""The http_poll watcher plugin.

A package only so that type checkers and pytest tell apart the modules that
every plugin names alike (watcher.py, test_watcher.py).
"""

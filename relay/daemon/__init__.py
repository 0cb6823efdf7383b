"""The long-running process: start-up checks, serving, reloads, shutdown, and systemd's
notifications. Must not import ``cli``.
"""

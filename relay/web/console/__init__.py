"""The web console: the set-up wizard and a live dashboard, served by the relay on its admin
listener under ``/console/``.

It is a client of the admin API (relay/web/admin.py): every change it makes is a request to that
API, so the API and the CLI can do the same. ``routes`` holds the pages and the sign-in,
``wizard`` the set-up steps, ``session`` the session cookie and CSRF tokens, ``api`` the
client; ``templates/`` the HTML (Jinja2, escaped), ``static/`` the scripts and styles, vendored
(static/VENDORED.md says which version of what, and from where). No script is inline: the
Content-Security-Policy allows only the relay's own files.
"""

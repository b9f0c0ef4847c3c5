"""The dashboard: see, steer and feed the queue from a browser (``GET /`` on the listener).

* :mod:`.auth` — who may use it: loopback, bearer token or login cookie; CSRF; DNS rebinding
* :mod:`.views` — what it shows, read with bounded queries only (blocking; the I/O thread)
* :mod:`.upload` — the upload writer: a pair streamed to hidden temps, linked into the inbox
* :mod:`.app` — the routes (pages, JSON, upload, files, static), served by
  :class:`hotfolder.server.Listener`
* :mod:`.receive` — ``POST /upload``: the multipart form parsed as it streams in
* ``templates/`` (Jinja2) and ``static/`` (CSS, one script, an icon): package data, served by
  the daemon itself; nothing comes from the internet, there is no build step.
"""

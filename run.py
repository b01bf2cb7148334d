"""Start Oblako: `python run.py` (what `make run` calls) serves the web app on PORT."""

from __future__ import annotations

import os

from app import create_app

app = create_app()

if __name__ == "__main__":
    port = int(os.environ.get("PORT", "5000"))
    host = os.environ.get("HOST", "127.0.0.1")
    app.run(host=host, port=port, debug=False, use_reloader=False, threaded=True)

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finops.settings")
# Web requests never need a long statement: one that runs past this is cancelled and answered 503
# (finops/settings.py; workers keep no limit for long rollups). DB_STATEMENT_TIMEOUT_MS=0 turns it off.
os.environ.setdefault("DB_STATEMENT_TIMEOUT_MS", "10000")
application = get_wsgi_application()

# tiktoken encodings take ~0.9 s to load: pay it at process start, not on a user's first request.
from finops.tokens import preload  # noqa: E402

preload()

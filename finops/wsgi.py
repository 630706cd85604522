import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finops.settings")
application = get_wsgi_application()

# tiktoken encodings take ~0.9 s to load: pay it at process start, not on a user's first request.
from finops.tokens import preload  # noqa: E402

preload()

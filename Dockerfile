# Production image. One image, three roles chosen by the command: gunicorn (the default below),
# `celery -A finops worker` and `celery -A finops beat` (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FINOPS_VAR_DIR=/app/var

WORKDIR /app
RUN groupadd --system finops && useradd --system --gid finops --home-dir /app --no-create-home finops

# Dependencies first so a code change does not reinstall them: the install sees stub packages, which
# COPY replaces. The install is editable because settings find templates/ and static/ beside the
# packages (BASE_DIR = /app); a regular install would move the packages into site-packages.
COPY pyproject.toml README.md ./
RUN mkdir finops tenants budgets tokenspend_client \
    && touch finops/__init__.py tenants/__init__.py budgets/__init__.py tokenspend_client/__init__.py \
    && pip install -e .
COPY . .

# Collected at build time: WhiteNoise serves them compressed from var/staticfiles (WHITENOISE_USE_FINDERS=false).
# The key below exists only for this step; the container refuses to start without its own.
RUN DJANGO_SECRET_KEY=collectstatic-only WHITENOISE_USE_FINDERS=false python manage.py collectstatic --noinput \
    && mkdir -p var/celery \
    && chown -R finops:finops var

USER finops
EXPOSE 8000
CMD ["gunicorn", "finops.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "2", "--access-logfile", "-"]

# Parley's one image: `parley api` by default; docker-compose.yml also runs `parley worker`
# and `parley migrate` from it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/parley
COPY . .
# Installs the `src` package and its dependencies, and the `parley` console script.
RUN pip install . \
    && rm -rf build *.egg-info

# Run as an unprivileged user; the data dir (SQLite fallback, when DATABASE_URL is unset)
# is the only place it writes.
RUN useradd --create-home --uid 10001 --user-group parley \
    && mkdir -p /var/lib/parley \
    && chown parley:parley /var/lib/parley
ENV PARLEY_DATA_DIR=/var/lib/parley \
    PARLEY_HOST=0.0.0.0 \
    PARLEY_PORT=8000
USER parley
WORKDIR /var/lib/parley

EXPOSE 8000
CMD ["parley", "api"]

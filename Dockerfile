# syntax=docker/dockerfile:1
# Build stage: the locked runtime dependencies (uv.lock, hashes checked) and the project, in a
# virtualenv. The uv release is the one uv.lock pins, installed by pip against its hashes.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PROJECT_ENVIRONMENT=/opt/venv UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy UV_NO_CACHE=1
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
COPY scripts/dev.py ./scripts/
RUN python scripts/dev.py uv-requirement > /tmp/uv.txt \
    && pip install --require-hashes --no-deps -r /tmp/uv.txt
COPY app ./app
# No dev tools (--no-dev), the project as a regular package (--no-editable).
RUN uv sync --locked --no-dev --no-editable

# Runtime stage: the virtualenv, the migrations, and a non-root user.
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATABASE_URL=sqlite+aiosqlite:////app/data/chatbot.db
RUN useradd --create-home --uid 10001 app \
    && mkdir -p /app/data && chown app:app /app/data
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY alembic.ini ./
COPY alembic ./alembic
USER app
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=3)"
# X-Forwarded-For is trusted only from FORWARDED_ALLOW_IPS (uvicorn's setting; default
# 127.0.0.1): set it to your proxy's address, or clients could forge the IP that sign-in
# throttling counts.
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers", "--no-access-log"]

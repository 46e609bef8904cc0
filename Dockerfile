FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY config ./config
COPY workers ./workers
COPY dispatcher ./dispatcher
COPY simulator ./simulator
COPY migrations ./migrations
RUN pip install --no-cache-dir . && useradd --create-home sms
USER sms
CMD ["celery", "-A", "workers", "worker", "--loglevel=INFO"]

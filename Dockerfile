# rl_worker's image: `rl-worker` is the entry point (`worker` by default; any command: `docker run IMAGE status`).
# Dependencies come from constraints.txt, the pinned set CI installs too (scripts/test.sh).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY constraints.txt pyproject.toml README.md ./
COPY rl_worker ./rl_worker
RUN pip install -c constraints.txt . \
 && groupadd --system --gid 10001 rl \
 && useradd --system --uid 10001 --gid rl --home-dir /data --no-create-home --shell /usr/sbin/nologin rl \
 && mkdir -p /data && chown rl:rl /data
# a numeric non-root user, so Kubernetes' runAsNonRoot can verify it
USER 10001:10001
ENV RL_WEB_HOST=0.0.0.0 RL_WEB_PORT=6066 RL_DATA_DIR=/data MPLCONFIGDIR=/tmp/matplotlib
EXPOSE 6066
# alive while the HTTP server answers; readiness (caught up with the learning log) is /health?ready=1
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=6 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('RL_WEB_PORT', '6066'), timeout=2)"]
ENTRYPOINT ["rl-worker"]
CMD ["worker", "-l", "info"]

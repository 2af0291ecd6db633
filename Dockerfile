FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY rl_worker ./rl_worker
RUN pip install --no-cache-dir .
ENV RL_WEB_HOST=0.0.0.0
ENTRYPOINT ["rl-worker"]
CMD ["worker", "-l", "info"]

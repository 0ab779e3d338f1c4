# Seed 003's serverless worker: a media URL in, an SRT in S3 out, on a RunPod GPU.
#   docker build -f docker/serverless.Dockerfile -t scribefleet-serverless .
#   docker run --gpus all -e SCRIBEFLEET_API_DEFAULT_MODEL=large-v3 scribefleet-serverless
# CTranslate2 (faster-whisper) needs CUDA 12 with cuDNN 9: the runtime image has both.
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 \
    # models downloaded on first use (or baked in below) live here; mount a network volume to share them
    SCRIBEFLEET_CACHE_DIR=/models SCRIBEFLEET_MODEL_DIR=/models/huggingface HF_HOME=/models/huggingface \
    SCRIBEFLEET_STATE_DIR=/work

# ffmpeg: yt-dlp merges and remuxes with it where a site serves split streams; Python 3.12 runs scribefleet
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3 python3-venv ffmpeg ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# serverless: the RunPod SDK; ytdlp: what yt-dlp needs for YouTube's JavaScript challenges (deno)
RUN pip install --no-cache-dir '.[serverless,ytdlp]'

# Optionally bake a model into the image so a cold worker does not download it:
#   docker build --build-arg MODEL=large-v3 ...
ARG MODEL=
RUN if [ -n "$MODEL" ]; then python -c "import faster_whisper, sys; faster_whisper.download_model(sys.argv[1])" "$MODEL"; fi

RUN mkdir -p /models /work
WORKDIR /work
CMD ["python", "-m", "scribefleet.serverless"]

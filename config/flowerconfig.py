"""Flower settings: `celery -A workers flower --conf=config/flowerconfig.py`.

Basic auth comes from FLOWER_BASIC_AUTH ("user:password"); there is no default password.
"""

import os

port = int(os.environ.get("FLOWER_PORT", "5555"))
address = os.environ.get("FLOWER_ADDRESS", "127.0.0.1")
basic_auth = [os.environ["FLOWER_BASIC_AUTH"]] if os.environ.get("FLOWER_BASIC_AUTH") else []
# Tasks carry ids only, so what Flower shows holds no phone numbers or texts.
max_tasks = 100_000
persistent = False

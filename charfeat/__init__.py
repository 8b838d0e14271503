"""charfeat: style embeddings of character and profile images."""

import os

# Under torchrun only rank 0 draws progress bars: tqdm reads TQDM_* defaults when it is first imported,
# which is after this (every entry point imports charfeat first).
if int(os.environ.get("RANK", "0")) > 0:
    os.environ.setdefault("TQDM_DISABLE", "1")

"""What checking key segments costs (issue 21): a full pass of ``repeats``
with and without ``validate(full=True)`` of each batch, opening the
segments' footers, an indexed look-up, and a SHA-256 of every segment (what
binding their bytes into the checkpoint would cost on each load).

    python benchmarks/keys_validation.py 3000000

On 2 shared cores (3,000,000 IDs, 12 segments, 330 MB): full pass 0.16 s
unvalidated, 0.19 s validated; open 1 ms; indexed look-up 5 ms; SHA-256 of
the segments 0.28 s (page cache); validate alone 0.055 s.
"""
import hashlib, sys, tempfile, time, uuid
from pathlib import Path
import numpy as np, pyarrow as pa
import aether_audit.audit.keys as K
N = int(sys.argv[1])
d = Path(tempfile.mkdtemp(dir="/tmp"))
store = K.KeyStore(d, extra=("actor_id", "subject"), name="ids")
t = time.perf_counter()
step = 250_000
for i in range(0, N, step):
    keys = pa.array([str(uuid.UUID(int=(j * 2654435761) % (1 << 128))) for j in range(i, min(N, i + step))])
    ords = np.arange(i, i + len(keys))
    store.add(keys, ords + 1, ords, {"actor_id": pa.array([f"actor-{j % 5000}" for j in ords]),
                                     "subject": pa.array([f"events.orders.actor-{j % 5000}" for j in ords])})
store.flush()
print("built", N, "in", round(time.perf_counter() - t, 1), "s;", len(store.segments), "segments;",
      round(sum((d / s["file"]).stat().st_size for s in store.segments) / 1e6), "MB")
def full_pass():
    s = K.KeyStore(d, store.segments, extra=("actor_id", "subject"), name="ids")
    s.add(pa.array(["x"]), [N + 5], [N + 5], {"actor_id": pa.array(["a"]), "subject": pa.array(["s"])})
    s._fresh = None
    t = time.perf_counter(); s.repeats(N + 5); return time.perf_counter() - t
def indexed():
    s = K.KeyStore(d, store.segments, extra=("actor_id", "subject"), name="ids")
    t = time.perf_counter()
    s.add(pa.array(["x"]), [N + 5], [N + 5], {"actor_id": pa.array(["a"]), "subject": pa.array(["s"])})
    s.repeats(N + 5); return time.perf_counter() - t
def opening():
    t = time.perf_counter(); K.KeyStore(d, store.segments, extra=("actor_id", "subject"), name="ids"); return time.perf_counter() - t
real = K._Segment.get_batch
for label in ("validated", "unvalidated", "validated"):
    K._Segment.get_batch = real if label == "validated" else (lambda self, p: self._reader.get_batch(p))
    print(label, "full pass", round(min(full_pass() for _ in range(3)), 3), "s; open", round(min(opening() for _ in range(3)), 4),
          "s; indexed", round(min(indexed() for _ in range(3)), 3), "s")
t = time.perf_counter()
for s in store.segments:
    hashlib.sha256((d / s["file"]).read_bytes()).digest()
print("sha256 of every segment (page cache)", round(time.perf_counter() - t, 3), "s")
# validate alone on every batch
rd = [pa.ipc.open_file(str(d / s["file"])) for s in store.segments]
batches = [r.get_batch(p) for r in rd for p in range(r.num_record_batches)]
t = time.perf_counter()
for b in batches: b.validate(full=True)
print("validate(full=True) alone, every batch of every segment", round(time.perf_counter() - t, 3), "s")
import shutil; shutil.rmtree(d)

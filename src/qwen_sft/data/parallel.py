"""Parse and encode rows on every core, in chunks, and hand the chunks back in file order.

The main process reads the files (formats.iter_rows: raw rows, cheap); worker processes parse, validate and
encode each chunk of rows with the same functions a single process uses (formats.read_row, encode.encode),
and return its tokens as arrays plus what the data report needs. The results come back in the order the
chunks were read, so the rows, their order, masks and report are the same, byte for byte, whatever the
number of workers (tested). A dataset of one chunk is encoded in this process: no worker start-up.

Workers are forked where the platform allows (Linux: the tokenizer is inherited, not pickled), ignore
SIGINT / SIGTERM (the main process decides to stop, between chunks, and ends them), and exit by themselves
if the main process dies.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from itertools import chain, islice

import numpy as np

from ..errors import StopRequested, UserError
from .encode import IGNORE_INDEX, EncodeError, EncodeOptions, encode
from .formats import RowError, read_row
from .report import ReportBuilder, conversation_digest, encoded_flags

CHUNK_ROWS = 1000  # about a second of work per chunk on one core


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's or a SLURM job's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class Chunk:
    """What a worker made of a chunk of rows: the kept rows as arrays, and the report's share."""

    invalid: list = field(default_factory=list)  # 'source: problem' per invalid row
    formats: list = field(default_factory=list)  # format per valid conversation
    digests: bytes = b""  # ReportBuilder.DIGEST_BYTES per valid conversation
    dropped: list = field(default_factory=list)  # 'source: reason' per row left with no trained token
    error: str | None = None  # an encoding error (e.g. a foreign chat template): stops the build
    encoded: bool = True  # False: only parsed (the build already failed; see ChunkEncoder.encode)
    ids: np.ndarray | None = None  # kept rows' tokens, back to back (int32)
    labels: np.ndarray | None = None
    lengths: np.ndarray | None = None  # tokens per kept row
    flags: np.ndarray | None = None  # bool [kept rows, len(encoded_flags())]
    trained: int = 0
    sources: list = field(default_factory=list)
    conversations: list = field(default_factory=list)  # each kept row as read, JSON


class DirectTokenizer:
    """The tokenizer, with encode()'s one call shape, `tokenizer(text or [texts], add_special_tokens=False,
    return_offsets_mapping=True)`, answered by the Rust tokenizer directly: the same ids, offsets and attention
    mask (tested), without transformers wrapping the texts as a batch and back (~0.13 ms of ~0.8 ms a
    sample row, docs/design.md). Any other call, attribute or tokenizer state (truncation or padding set on the
    backend, split_special_tokens) goes to the tokenizer itself."""

    def __init__(self, tokenizer):
        self._tokenizer, self._backend = tokenizer, tokenizer.backend_tokenizer

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)

    def __call__(self, text=None, *args, add_special_tokens=True, return_offsets_mapping=False, **kwargs):
        backend = self._backend
        texts = [text] if isinstance(text, str) else text
        if args or kwargs or not (isinstance(texts, list) and all(isinstance(t, str) for t in texts)) \
                or add_special_tokens or not return_offsets_mapping \
                or backend.truncation is not None or backend.padding is not None \
                or backend.encode_special_tokens != bool(self._tokenizer.split_special_tokens):
            return self._tokenizer(text, *args, add_special_tokens=add_special_tokens,
                                   return_offsets_mapping=return_offsets_mapping, **kwargs)
        from transformers import BatchEncoding

        # One text at a time: encode_batch would start the tokenizer's thread pool inside each worker process.
        found = [backend.encode(t, add_special_tokens=False) for t in texts]
        fields = {"input_ids": [e.ids for e in found], "attention_mask": [e.attention_mask for e in found],
                  "offset_mapping": [e.offsets for e in found]}
        return BatchEncoding({k: v[0] for k, v in fields.items()} if isinstance(text, str) else fields)


def prompt_tokens(conv, tokenizer, opts: EncodeOptions) -> int:
    """Tokens before the first trained one in the whole, uncut row (what a dropped row's message names): the
    fewest of any of its sequences."""
    full = encode(conv, tokenizer, dataclasses.replace(opts, cutoff_len=sys.maxsize))
    return min(next((i for i, label in enumerate(e.labels) if label != IGNORE_INDEX), len(e.labels))
               for e in [full] + full.more)


def encode_chunk(items: list, tokenizer, opts: EncodeOptions, encode_rows: bool = True) -> Chunk:
    """items: (source, row-or-RowError, schema) from formats.iter_rows."""
    out, flag_names = Chunk(encoded=encode_rows), encoded_flags()
    digests, ids, labels, lengths, flags = [], [], [], [], []
    for where, row, schema in items:
        try:
            conv = read_row(where, row, schema)
        except RowError as e:
            out.invalid.append(f"{where}: {e}")
            continue
        out.formats.append(conv.format)
        digests.append(conversation_digest(conv)[:ReportBuilder.DIGEST_BYTES])
        if not encode_rows:
            continue
        try:
            enc = encode(conv, tokenizer, opts)
        except EncodeError as e:  # a row the template renders in a shape the mask rule cannot serve: invalid
            out.invalid.append(str(e))
            out.formats.pop()
            digests.pop()
            continue
        except UserError as e:
            out.error, encode_rows = str(e), False
            continue
        # A row's sequences (encode.py): those with a trained token within cutoff_len are kept; continues_row
        # marks each kept one after the first, so that a split and the report see the row as one.
        kept = [e for e in [enc] + enc.more if e.num_trained]
        if not kept:
            out.dropped.append(f"{conv.source}: no trained token within cutoff_len={opts.cutoff_len} (the prompt "
                               f"before the first trained token is {prompt_tokens(conv, tokenizer, opts)} tokens)")
            continue
        row_json = json.dumps({"format": conv.format, **conv.to_json()}, ensure_ascii=False)
        for k, e in enumerate(kept):
            e.continues_row = k > 0
            ids += e.input_ids
            labels += e.labels
            lengths.append(len(e.input_ids))
            flags.append([getattr(e, f) for f in flag_names])
            out.trained += e.num_trained
            out.sources.append(conv.source)
            out.conversations.append(row_json)
    out.digests = b"".join(digests)
    out.ids, out.labels = np.array(ids, dtype=np.int32), np.array(labels, dtype=np.int32)
    out.lengths = np.array(lengths, dtype=np.int64)
    out.flags = np.array(flags, dtype=bool).reshape(len(lengths), len(flag_names))
    return out


# ---------------------------------------------------------------- worker processes

_worker: dict = {}


def _init_worker(tokenizer, opts: EncodeOptions, parent: int) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # a Ctrl-C reaches the whole process group: the main process handles it
    _worker.update(tokenizer=DirectTokenizer(tokenizer), opts=opts)

    def watch():  # the main process was killed (SIGKILL, or a second Ctrl-C): do not live on, orphaned
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _work(task: tuple[list, bool]) -> Chunk:
    items, encode_rows = task
    return encode_chunk(items, _worker["tokenizer"], _worker["opts"], encode_rows)


class ChunkEncoder:
    """Encodes chunks of rows in `workers` processes (or in this one), yielding them in order.

    Set `encode = False` once the result is known to be an error (an invalid row without skip_invalid, an
    encoding error): chunks read after that are only parsed, so every problem is still listed, sooner.
    `stop`: called between chunks; True ends the build with StopRequested (a Ctrl-C during a long encode)."""

    def __init__(self, tokenizer, opts: EncodeOptions, workers: int, chunk_rows: int = CHUNK_ROWS, stop=None):
        self.tokenizer, self.opts, self.workers, self.chunk_rows, self.stop = tokenizer, opts, workers, chunk_rows, stop
        self.encode = True
        self.used_workers = 0  # processes started (0: encoded here)

    def _check_stop(self) -> None:
        if self.stop is not None and self.stop():
            raise StopRequested("stopped while encoding the data; nothing was saved")

    def run(self, items):
        chunks = iter(lambda: list(islice(items, self.chunk_rows)), [])
        first, second = next(chunks, None), next(chunks, None)
        head = [c for c in (first, second) if c is not None]
        if self.workers <= 1 or second is None:
            tokenizer = DirectTokenizer(self.tokenizer)
            for chunk in chain(head, chunks):
                self._check_stop()
                yield encode_chunk(chunk, tokenizer, self.opts, self.encode)
            return
        yield from self._run_pool(chain(head, chunks))

    def _run_pool(self, chunks):
        from concurrent.futures import ProcessPoolExecutor

        # fork: the workers inherit the tokenizer (spawn would pickle it, ~1 s each). Only Linux forks safely here.
        ctx = mp.get_context("fork" if sys.platform == "linux" else "spawn")
        # tokenizers warns in a forked child when the parent used its thread pool; one thread per worker is right.
        old = os.environ.get("TOKENIZERS_PARALLELISM")
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        # A worker that dies (killed, out of memory) fails the build (BrokenProcessPool) instead of hanging it.
        pool = ProcessPoolExecutor(self.workers, ctx, initializer=_init_worker,
                                   initargs=(self.tokenizer, self.opts, os.getpid()))
        self.used_workers = self.workers
        try:
            pending = deque()
            for chunk in chunks:  # at most 2 chunks per worker in flight: the files are never read ahead into memory
                self._check_stop()
                pending.append(pool.submit(_work, (chunk, self.encode)))
                if len(pending) >= 2 * self.workers:
                    yield pending.popleft().result()
            while pending:
                self._check_stop()
                yield pending.popleft().result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # a stop or an error: at most the chunks being encoded finish
            if old is None:
                os.environ.pop("TOKENIZERS_PARALLELISM", None)
            else:
                os.environ["TOKENIZERS_PARALLELISM"] = old

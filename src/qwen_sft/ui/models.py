"""Models and tokenizers the pages use: found in the workspace, or the package's bundled Qwen3 tokenizers.

- list_models: base and merged model directories (config.json and *.safetensors) and LoRA adapters
  (adapter_config.json) in the workspace, found by a scan that follows no symlink.
- A model a request names is a path inside the workspace, or a hub id (org/name) loaded from the local Hugging
  Face cache, the rule of the start form; an adapter's base model must be one of those too (model_ref).
- Tokenizers (the data page): "bundled:hybrid" | "bundled:instruct-2507" | "bundled:thinking-2507" (the
  package's Qwen3 tokenizer with that chat template), or a model or adapter in the workspace (an adapter's own
  copy of its training tokenizer, else its base's: runfiles.tokenizer_dir).
- pieces: each token's text, such that the pieces joined are the decoded text.
"""

from __future__ import annotations

import codecs
import functools
import threading
import time
from collections import OrderedDict
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..assets import VARIANTS
from ..runfiles import adapter_base_model, is_adapter_dir, tokenizer_dir
from .configs import is_local
from .context import ApiError, inside, relative, subfolders

BUNDLED = "bundled:"
SKIP = {"node_modules", "__pycache__", "site-packages", "venv", "logs"}
MAX_DEPTH = 7  # workspace/sft/outputs/training/<run>/lora_adapters is 5 deep
CACHED_TOKENIZERS = 4
FAILED_TTL_S = 30.0  # a failed tokenizer load is answered from memory this long (then tried again: a fixed model)


def model_ref(workspace: Path, name: str, what: str = "model") -> str:
    """A model name as the loaders take it: a resolved path inside the workspace, or a hub id. Refused otherwise."""
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, f"{what}: choose a model")
    if is_local(workspace, name):
        path = inside(workspace, name, what)
        if not path.exists():
            raise ApiError(404, f"{what}: {name} not found in the workspace")
        return str(path)
    return name


def adapter_base(workspace: Path, adapter: Path) -> str:
    """The base model of an adapter in the workspace, checked by model_ref (it may name a path outside)."""
    from ..errors import UserError

    try:
        base = adapter_base_model(adapter)
    except UserError as e:
        raise ApiError(422, str(e)) from None
    # The adapter's own base is named relative to where it was trained: the workspace, for runs started here.
    return model_ref(workspace, base, f"{relative(workspace, adapter)}: its base model")


def list_models(workspace: Path) -> list[dict]:
    out: list[dict] = []

    def scan(folder: Path, depth: int) -> None:
        if is_adapter_dir(folder):
            run = folder.parent.name if folder.name == "lora_adapters" else folder.name
            try:  # its base, as the pages name it (a path relative to the workspace, or a hub id)
                base = adapter_base(workspace, folder)
                base = relative(workspace, Path(base)) if Path(base).is_absolute() else base
            except ApiError:
                base = None
            out.append(
                {"id": relative(workspace, folder), "kind": "adapter", "label": f"{run}: LoRA adapter", "base": base}
            )
            return
        if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
            merged = (folder / "qwen_sft.json").is_file()
            out.append({"id": relative(workspace, folder), "kind": "merged" if merged else "model",
                        "label": f"{relative(workspace, folder)}{' (merged)' if merged else ''}"})
            return
        if depth >= MAX_DEPTH:
            return
        for sub in subfolders(folder, SKIP):
            scan(sub, depth + 1)

    scan(workspace, 0)
    return out


def tokenizer_choices(workspace: Path) -> list[dict]:
    bundled = [{"id": f"{BUNDLED}{v}", "label": f"Qwen3 {v} template (bundled tokenizer)"} for v in VARIANTS]
    return bundled + [{"id": m["id"], "label": m["label"]} for m in list_models(workspace)]


# ---------------------------------------------------------------- tokenizers


class Tokenizers:
    """Loaded tokenizers by spec (module doc), the newest CACHED_TOKENIZERS kept, and failed loads by spec (with
    their message, for FAILED_TTL_S: a page asks for a page of rows at a time). `lock`: tokenizers are not safe to
    use from two threads at once (the fast tokenizer's settings are changed per call). Loading holds no lock that
    other requests wait on: the rows of a tokenizer already loaded are served meanwhile.

    A hub id is read from the local Hugging Face cache only: nothing here reaches the network."""

    def __init__(self, workspace: Path):
        self.workspace = workspace
        self.lock = threading.RLock()
        self._state = threading.Lock()  # guards the dicts below, held for no I/O
        self._cache: OrderedDict[str, tuple] = OrderedDict()
        self._failed: dict[str, tuple[float, ApiError]] = {}
        self._loading: dict[str, threading.Lock] = {}  # one load of a spec at a time

    def get(self, spec: str | None) -> tuple[object, str]:
        """(tokenizer, the name that messages give it)."""
        spec = spec or f"{BUNDLED}hybrid"
        if not isinstance(spec, str):
            raise ApiError(400, f"tokenizer: expected a name (text), got {type(spec).__name__}")
        found = self._known(spec)
        if found is not None:
            return found
        with self._state:
            loading = self._loading.setdefault(spec, threading.Lock())
        with loading:
            found = self._known(spec)  # loaded (or failed) while this request waited for the same spec
            if found is not None:
                return found
            try:
                found = self._load(spec)
            except Exception as e:
                error = e if isinstance(e, ApiError) else ApiError(422, f"tokenizer: {spec}: cannot load it: "
                                                                        f"{type(e).__name__}: {e}")
                with self._state:
                    self._failed[spec] = (time.monotonic(), error)
                    self._loading.pop(spec, None)
                raise error from None
            with self._state:
                self._cache[spec] = found
                while len(self._cache) > CACHED_TOKENIZERS:
                    self._cache.popitem(last=False)
                self._failed.pop(spec, None)
                self._loading.pop(spec, None)
            return found

    def _known(self, spec: str) -> tuple[object, str] | None:
        """The loaded tokenizer, or raises the recent failure again; None: load it."""
        with self._state:
            if spec in self._cache:
                self._cache.move_to_end(spec)
                return self._cache[spec]
            failed = self._failed.get(spec)
            if failed is not None and time.monotonic() - failed[0] < FAILED_TTL_S:
                raise failed[1]
        return None

    def _load(self, spec: str) -> tuple[object, str]:
        from ..assets import qwen3_tokenizer_dir
        from ..errors import UserError
        from ..data.tokenizer import load_tokenizer

        if spec.startswith(BUNDLED):
            variant = spec[len(BUNDLED):]
            if variant not in VARIANTS:
                raise ApiError(404, f"tokenizer: no bundled template {variant!r} (choose {', '.join(VARIANTS)})")
            return load_tokenizer(str(qwen3_tokenizer_dir(variant))), f"Qwen3 {variant} (bundled tokenizer)"
        ref = model_ref(self.workspace, spec, "tokenizer")
        try:
            if Path(ref).is_dir() and is_adapter_dir(Path(ref)):
                own = tokenizer_dir(ref)
                source = own if own == ref else adapter_base(self.workspace, Path(ref))
            elif Path(ref).is_dir():
                source = ref
            else:
                source = cached_snapshot(ref, "tokenizer")
            if not Path(source).is_dir():  # an adapter's base that is a hub id
                source = cached_snapshot(source, "tokenizer")
            return load_tokenizer(source), spec
        except UserError as e:
            raise ApiError(422, str(e)) from None


def cached_snapshot(repo_id: str, what: str) -> str:
    """The local Hugging Face cache's copy of a hub model (its directory), with no network access: the data
    page downloads nothing (HF_HUB_OFFLINE's behaviour, whatever the environment says)."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, local_files_only=True)
    except (OSError, ValueError):  # not cached (LocalEntryNotFoundError), not a valid repo id (HFValidationError)
        raise ApiError(404, f"{what}: {repo_id} is not in the local Hugging Face cache, and the UI downloads nothing "
                            f"here; download it (`hf download {repo_id}`), or choose a bundled tokenizer or a model "
                            "of the workspace") from None


@functools.cache
def _byte_decoder() -> dict[str, int]:
    """Byte-level BPE's alphabet inverted: a token's characters -> its bytes (printable bytes stand for
    themselves, the other 68 bytes for the characters from U+0100 on, in byte order)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), 256)]
    chars, shifted = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + shifted)] = b
            shifted += 1
    return chars


def pieces(tok, ids: list[int]) -> list[str]:
    """Each token's text; joined, they are tok.decode(ids). A character whose bytes span several tokens shows on
    the token that completes it (the ones before show ''); added tokens (<|im_start|>, <think>) are their text."""
    added = tok.added_tokens_decoder
    table = _byte_decoder()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    out = []
    for tid, token in zip(ids, tok.convert_ids_to_tokens(list(ids))):
        if tid in added:
            out.append(decoder.decode(b"", final=True) + added[tid].content)
            decoder.reset()
        else:
            out.append(decoder.decode(bytes(table[c] for c in token)))
    if out:
        out[-1] += decoder.decode(b"", final=True)
    return out


# ---------------------------------------------------------------- routes (/api/models)


def routes() -> list[Route]:
    return [Route("/list", list_all)]


async def list_all(request: Request):
    ws = request.app.state.ui.settings.workspace
    return JSONResponse(
        await run_in_threadpool(lambda: {"models": list_models(ws), "tokenizers": tokenizer_choices(ws)})
    )

"""Tokenizers: one small interface, a byte tokenizer for laptop scale, and a HF `tokenizers` wrapper.

* `ByteTokenizer` needs no files: ids 0..255 are the UTF-8 bytes of the text, then pad=256,
  bos=257, eos=258 (V = 259; a model config may round V up, ids >= 259 decode to U+FFFD).
* `HFTokenizer(path)` reads `<path>/tokenizer.json` (Qwen2, Llama-3, ...) with the Rust
  `tokenizers` library, special tokens and the chat template from `tokenizer_config.json`
  (or `chat_template.jinja`), and renders the template the way `transformers` does, in a
  jinja2 sandbox.
* `load_tokenizer("byte" | folder)` picks one.

Ids are plain Python ints; `decode` never raises on ids a model may produce (out of range or
invalid UTF-8 become U+FFFD or are dropped).
"""
from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Tokenizer", "ByteTokenizer", "HFTokenizer", "load_tokenizer"]


@runtime_checkable
class Tokenizer(Protocol):
    """What the sampler, tasks and rewards need from a tokenizer.

    `bos_id` may be None (Qwen2 has no BOS); `pad_id` is always an int (padding is masked).
    Implementations may inherit from this class to get the batch conveniences.
    """

    bos_id: int | None
    eos_id: int | None
    pad_id: int
    vocab_size: int

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        """Text -> token ids; `add_bos` prepends `bos_id` when the tokenizer has one."""
        ...

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Token ids -> text; never raises on arbitrary integer ids."""
        ...

    def encode_batch(self, texts: Sequence[str], add_bos: bool = False) -> list[list[int]]:
        """[B] texts -> B ragged id lists."""
        return [self.encode(t, add_bos=add_bos) for t in texts]

    def decode_batch(self, ids_batch: Iterable[Iterable[int]], skip_special: bool = True) -> list[str]:
        """B id sequences (ragged lists or an int array [B, T]) -> [B] texts."""
        return [self.decode(ids, skip_special=skip_special) for ids in ids_batch]


def _as_int_array(ids: Iterable[int]) -> np.ndarray:
    """Any id sequence (list, tuple, numpy or jax array [T]) -> int64 numpy array [T]."""
    if not hasattr(ids, "__array__"):
        ids = list(ids)
    try:
        return np.asarray(ids, dtype=np.int64).reshape(-1)
    except OverflowError:  # Python ints beyond int64: clamp them, they are out of range anyway
        return np.array([min(max(int(i), -1), 2**62) for i in ids], dtype=np.int64)


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes as ids 0..255, then pad=256, bos=257, eos=258; `vocab_size` = 259."""

    pad_id = 256
    bos_id = 257
    eos_id = 258
    vocab_size = 259
    _special_names = {256: "<pad>", 257: "<bos>", 258: "<eos>"}

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        """Text -> its UTF-8 bytes as ints (a lone surrogate raises UnicodeEncodeError, a ValueError)."""
        ids = list(text.encode("utf-8"))
        return [self.bos_id, *ids] if add_bos else ids

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Ids -> text. Invalid UTF-8 and ids outside [0, 259) become U+FFFD; the special ids
        are dropped (`skip_special`) or rendered as `<pad>`, `<bos>`, `<eos>`."""
        if isinstance(ids, (list, tuple)):
            try:  # fast path: every id is a byte
                return bytes(ids).decode("utf-8", errors="replace")
            except (ValueError, TypeError):
                pass
        ids_T = _as_int_array(ids)
        is_byte_T = (ids_T >= 0) & (ids_T < 256)
        if skip_special:
            is_special_T = (ids_T >= 256) & (ids_T < self.vocab_size)
            ids_T, is_byte_T = ids_T[~is_special_T], is_byte_T[~is_special_T]
        if is_byte_T.all():  # the common case: one C-level conversion
            return ids_T.astype(np.uint8).tobytes().decode("utf-8", errors="replace")
        # Split into runs of bytes separated by non-byte ids; the loop is over those few ids.
        pieces, start = [], 0
        for t in np.flatnonzero(~is_byte_T):
            pieces.append(ids_T[start:t].astype(np.uint8).tobytes().decode("utf-8", errors="replace"))
            pieces.append(self._special_names.get(int(ids_T[t]), "\ufffd"))
            start = t + 1
        pieces.append(ids_T[start:].astype(np.uint8).tobytes().decode("utf-8", errors="replace"))
        return "".join(pieces)


def _token_content(value: Any, field: str, file: pathlib.Path) -> str | None:
    """A special token in tokenizer_config.json: a string, an AddedToken dict or null."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"{file}: field {field!r} must be a string or an AddedToken dict, got {value!r}")


def _compile_chat_template(source: str):
    """Compile a HF chat template with the environment transformers uses (sandboxed, trim and
    lstrip blocks, loop controls, `tojson` without HTML escaping, `raise_exception`)."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(jinja2.ext.Extension):
        """`{% generation %}...{% endgeneration %}` (assistant-mask marker): render the body."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

        def _render(self, caller):
            return caller()

    class SafeNamespace(jinja2.utils.Namespace):
        """`namespace(...)` that refuses underscore attributes (closes a known sandbox escape)."""

        def __init__(*args, **kwargs):
            self, attrs = args[0], dict(*args[1:], **kwargs)
            for name in attrs:
                SafeNamespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            SafeNamespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"namespace attribute {name!r} is not allowed")

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["namespace"] = SafeNamespace
    return env.from_string(source)


class HFTokenizer(Tokenizer):
    """A Hugging Face tokenizer folder: `tokenizer.json` (required), `tokenizer_config.json`
    (bos/eos/pad/unk tokens, `chat_template`) and `chat_template.jinja` (optional).

    `encode` never adds the post-processor's special tokens (`add_bos` does that explicitly);
    `pad_id` falls back to `eos_id`, then 0, when the config names no pad token. Decoding does
    not apply `clean_up_tokenization_spaces` (transformers skips it for BPE models too).
    """

    def __init__(self, path: str | pathlib.Path):
        from tokenizers import Tokenizer as RustTokenizer

        self.path = pathlib.Path(path)
        tok_file = self.path / "tokenizer.json"
        if not tok_file.is_file():
            raise ValueError(f"no tokenizer.json in {self.path} (looked for {tok_file})")
        self._tok = RustTokenizer.from_file(str(tok_file))
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

        cfg_file = self.path / "tokenizer_config.json"
        cfg = json.loads(cfg_file.read_text(encoding="utf-8")) if cfg_file.is_file() else {}
        #: bos_token, eos_token, ... as strings: the template variables transformers provides.
        self.special_tokens: dict[str, str] = {}
        for field in ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
            content = _token_content(cfg.get(field), field, cfg_file)
            if content is not None:
                self.special_tokens[field] = content
        self.bos_id = self._special_id("bos_token", cfg_file)
        self.eos_id = self._special_id("eos_token", cfg_file)
        pad_id = self._special_id("pad_token", cfg_file)
        self.pad_id = pad_id if pad_id is not None else (self.eos_id if self.eos_id is not None else 0)
        self.chat_template = self._read_chat_template(cfg, cfg_file)
        self._compiled_template = None

    def _special_id(self, field: str, cfg_file: pathlib.Path) -> int | None:
        content = self.special_tokens.get(field)
        if content is None:
            return None
        token_id = self._tok.token_to_id(content)
        if token_id is None:
            raise ValueError(f"{cfg_file}: {field} {content!r} is not in the vocabulary of tokenizer.json")
        return token_id

    def _read_chat_template(self, cfg: dict, cfg_file: pathlib.Path) -> str | None:
        jinja_file = self.path / "chat_template.jinja"
        if jinja_file.is_file():  # the newer transformers format; it takes precedence
            return jinja_file.read_text(encoding="utf-8")
        template = cfg.get("chat_template")
        if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default")
        if template is not None and not isinstance(template, str):
            raise ValueError(f"{cfg_file}: chat_template must be a string or a list with a 'default' entry")
        return template

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        """Text -> ids, without post-processor tokens; `add_bos` prepends `bos_id` if there is one."""
        ids = self._tok.encode(text, add_special_tokens=False).ids
        return [self.bos_id, *ids] if add_bos and self.bos_id is not None else ids

    def encode_batch(self, texts: Sequence[str], add_bos: bool = False) -> list[list[int]]:
        """[B] texts -> B ragged id lists (encoded in parallel by the Rust library)."""
        encodings = self._tok.encode_batch(list(texts), add_special_tokens=False)
        prefix = [self.bos_id] if add_bos and self.bos_id is not None else []
        return [prefix + e.ids for e in encodings]

    def _valid(self, ids: Iterable[int]) -> list[int]:
        ids_T = _as_int_array(ids)
        return ids_T[(ids_T >= 0) & (ids_T < self.vocab_size)].tolist()

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Ids -> text; ids outside [0, vocab_size) (e.g. a model's padded vocabulary) are dropped."""
        return self._tok.decode(self._valid(ids), skip_special_tokens=skip_special)

    def decode_batch(self, ids_batch: Iterable[Iterable[int]], skip_special: bool = True) -> list[str]:
        """B id sequences (ragged lists or an int array [B, T]) -> [B] texts."""
        return self._tok.decode_batch([self._valid(ids) for ids in ids_batch], skip_special_tokens=skip_special)

    def apply_chat_template(
        self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True, **kwargs: Any
    ) -> str:
        """Render `messages` ([{"role": ..., "content": ...}, ...]) as transformers'
        `apply_chat_template(messages, tokenize=False)` does. Extra keyword arguments (e.g.
        `enable_thinking`, `tools`) become template variables. A template that calls
        `raise_exception` (or fails otherwise) raises ValueError."""
        import jinja2

        if self.chat_template is None:
            raise ValueError(f"{self.path}: no chat_template in tokenizer_config.json or chat_template.jinja")
        if self._compiled_template is None:
            try:
                self._compiled_template = _compile_chat_template(self.chat_template)
            except jinja2.TemplateSyntaxError as e:
                raise ValueError(f"{self.path}: chat template line {e.lineno}: {e.message}") from e
        variables = {"tools": None, "documents": None, **self.special_tokens, **kwargs}
        try:
            return self._compiled_template.render(
                messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt, **variables
            )
        except jinja2.TemplateError as e:
            raise ValueError(f"{self.path}: chat template: {e}") from e


def load_tokenizer(path_or_name: str | pathlib.Path) -> Tokenizer:
    """"byte" -> `ByteTokenizer()`; a folder with tokenizer.json -> `HFTokenizer(folder)`."""
    if str(path_or_name) == "byte":
        return ByteTokenizer()
    if pathlib.Path(path_or_name).is_dir():
        return HFTokenizer(path_or_name)
    raise ValueError(f"tokenizer {str(path_or_name)!r} is neither 'byte' nor a folder with tokenizer.json")

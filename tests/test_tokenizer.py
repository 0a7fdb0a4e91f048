"""Tokenizer tests: byte round trips, and agreement with transformers on a BPE built here."""
import json

import hypothesis.strategies as st
import numpy as np
import pytest
import tokenizers
import transformers
from hypothesis import given, settings
from tokenizers import decoders, models, pre_tokenizers, trainers

from r1jax.tokenizer import ByteTokenizer, HFTokenizer, Tokenizer, load_tokenizer

# ---------------------------------------------------------------------------------------------
# ByteTokenizer


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_byte_round_trip(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8"))
    assert tok.decode(ids) == text
    assert tok.encode(text, add_bos=True) == [tok.bos_id] + ids
    assert tok.decode([tok.bos_id] + ids + [tok.eos_id, tok.pad_id]) == text
    assert tok.decode(np.asarray([tok.bos_id] + ids, np.int32), skip_special=False) == "<bos>" + text


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=-(2**70), max_value=2**70) | st.integers(0, 300), max_size=40))
def test_byte_decode_garbage_never_raises(ids):
    tok = ByteTokenizer()
    for skip in (True, False):
        text = tok.decode(ids, skip_special=skip)
        assert isinstance(text, str)
    # Reference: a brute-force loop over the ids.
    expected, run = [], bytearray()
    for i in ids:
        if 0 <= i < 256:
            run.append(i)
            continue
        expected.append(run.decode("utf-8", errors="replace"))
        run = bytearray()
        expected.append({256: "<pad>", 257: "<bos>", 258: "<eos>"}.get(i, "\ufffd"))
    expected.append(run.decode("utf-8", errors="replace"))
    assert tok.decode(ids, skip_special=False) == "".join(expected)


def test_byte_specifics():
    tok = ByteTokenizer()
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (256, 257, 258, 259)
    assert isinstance(tok, Tokenizer)
    assert tok.decode([0xE2, 0x82]) == "\ufffd"  # truncated 3-byte sequence
    assert tok.decode([104, 300, 105, -1]) == "h\ufffdi\ufffd"
    assert tok.decode([104, 257, 105], skip_special=False) == "h<bos>i"
    texts = ["a", "", "héllo wörld", "日本"]
    batch = tok.encode_batch(texts, add_bos=True)
    assert batch == [tok.encode(t, add_bos=True) for t in texts]
    assert tok.decode_batch(batch) == texts
    padded_BT = np.full((2, 4), tok.pad_id)
    padded_BT[0, :2] = [104, 105]
    assert tok.decode_batch(padded_BT) == ["hi", ""]
    with pytest.raises(ValueError):  # a lone surrogate cannot be encoded
        tok.encode("\ud800")


# ---------------------------------------------------------------------------------------------
# HFTokenizer against transformers

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>"]
CORPUS = [
    "Let's think step by step. 12 + 7 = 19, then 19 * 3 = 57.",
    "<think>The numbers are 3, 5 and 8.</think><answer>24</answer>",
    "Wir denken Schritt für Schritt: 4 mal 6 ist 24.",
    "The quick brown fox jumps over the lazy dog 1234567890 times.",
    "数学很有趣。答案是 42。",
    "def f(x):\n    return x ** 2 + 1\n",
] * 4

# A Qwen2.5-style template exercising what Hub templates use: namespace-free loops, loop
# controls, raise_exception, tojson, bos_token/eos_token, whitespace control.
CHAT_TEMPLATE = """{{ bos_token }}
{%- if tools %}
<|im_start|>system
{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}{% else %}You are a helpful assistant.{% endif %}

# Tools
{% for tool in tools %}
{{ tool | tojson }}
{% endfor %}
<|im_end|>
{% elif messages[0]['role'] != 'system' %}
<|im_start|>system
You are a helpful assistant.<|im_end|>
{% endif %}
{% for message in messages %}
    {% if message['role'] == 'system' and tools %}{% continue %}{% endif %}
    {% if message['role'] not in ['system', 'user', 'assistant'] %}
        {{ raise_exception('unknown role: ' + message['role']) }}
    {% endif %}
<|im_start|>{{ message['role'] }}
{{ message['content'] | trim }}<|im_end|>
    {% if loop.last and message['role'] == 'assistant' %}{{ eos_token }}{% break %}{% endif %}
{% endfor %}
{% if add_generation_prompt %}
<|im_start|>assistant
{% endif %}"""


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("bpe")
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    tok.save(str(path / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": False, "normalized": False, "rstrip": False,
                      "single_word": False, "special": True},
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def ours(tok_dir):
    return HFTokenizer(tok_dir)


@pytest.fixture(scope="module")
def theirs(tok_dir):
    return transformers.AutoTokenizer.from_pretrained(str(tok_dir))


def test_special_ids(ours, theirs):
    assert ours.bos_id == theirs.bos_token_id == theirs.convert_tokens_to_ids("<s>")
    assert ours.eos_id == theirs.eos_token_id
    assert ours.pad_id == theirs.pad_token_id
    assert ours.vocab_size == len(theirs)
    assert isinstance(ours, Tokenizer)


text_with_specials = st.lists(st.text(max_size=20) | st.sampled_from(SPECIALS + CORPUS[:6]), max_size=6).map("".join)


@settings(max_examples=200, deadline=None)
@given(text_with_specials)
def test_encode_decode_match_transformers(ours, theirs, text):
    ids = ours.encode(text)
    assert ids == theirs.encode(text, add_special_tokens=False)
    assert ours.encode(text, add_bos=True) == [ours.bos_id] + ids
    for skip in (True, False):
        assert ours.decode(ids, skip_special=skip) == theirs.decode(ids, skip_special_tokens=skip)
    assert ours.decode(ids, skip_special=False) == text  # byte-level BPE is lossless


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 399), max_size=30))
def test_decode_random_ids_match_transformers(ours, theirs, ids):
    for skip in (True, False):
        assert ours.decode(ids, skip_special=skip) == theirs.decode(ids, skip_special_tokens=skip)
    # Out-of-range ids (a padded model vocabulary, negatives) are dropped, never an error.
    assert ours.decode([-3, *ids, ours.vocab_size, 10**30]) == ours.decode(ids)


def test_batch_matches_single(ours):
    texts = CORPUS[:6] + ["", "<|im_start|>user\nhi<|im_end|>"]
    batch = ours.encode_batch(texts, add_bos=True)
    assert batch == [ours.encode(t, add_bos=True) for t in texts]
    assert ours.decode_batch(batch) == [ours.decode(ids) for ids in batch]
    width = max(map(len, batch))
    padded_BT = np.array([ids + [ours.pad_id] * (width - len(ids)) for ids in batch], np.int32)
    assert ours.decode_batch(padded_BT) == ours.decode_batch(batch)


CONVERSATIONS = [
    [{"role": "user", "content": "What is 2 + 3?"}],
    [{"role": "system", "content": "Answer in German."}, {"role": "user", "content": "  2 + 3?  "}],
    [
        {"role": "user", "content": "What is 2 + 3?"},
        {"role": "assistant", "content": "<think>2 + 3 = 5</think><answer>5</answer>"},
        {"role": "user", "content": "And 5 * 4 \"quoted\" <b>?"},
    ],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
]


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("index", range(len(CONVERSATIONS)))
def test_chat_template_matches_transformers(ours, theirs, index, add_generation_prompt):
    messages = CONVERSATIONS[index]
    expected = theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert ours.apply_chat_template(messages, add_generation_prompt=add_generation_prompt) == expected


def test_chat_template_tools_match_transformers(ours, theirs):
    tools = [{"type": "function", "function": {"name": "add", "description": "a + b <tag> & \"q\"",
                                               "parameters": {"a": "int", "b": "int"}}}]
    messages = CONVERSATIONS[1]
    expected = theirs.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
    got = ours.apply_chat_template(messages, tools=tools)
    assert got == expected
    assert '"a + b <tag> & \\"q\\""' in got  # tojson does not escape HTML


def test_chat_template_errors(ours, tmp_path):
    with pytest.raises(ValueError, match="unknown role: tool"):
        ours.apply_chat_template([{"role": "tool", "content": "x"}])
    (tmp_path / "tokenizer.json").write_text((ours.path / "tokenizer.json").read_text())
    bare = HFTokenizer(tmp_path)  # no tokenizer_config.json: no specials, no template
    assert (bare.bos_id, bare.eos_id, bare.pad_id) == (None, None, 0)
    assert bare.encode("step", add_bos=True) == ours.encode("step")
    with pytest.raises(ValueError, match="no chat_template"):
        bare.apply_chat_template(CONVERSATIONS[0])


def test_chat_template_jinja_file_takes_precedence(ours, tmp_path):
    (tmp_path / "tokenizer.json").write_text((ours.path / "tokenizer.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text((ours.path / "tokenizer_config.json").read_text())
    (tmp_path / "chat_template.jinja").write_text("{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}")
    assert HFTokenizer(tmp_path).apply_chat_template(CONVERSATIONS[3]) == "[user]Hi[assistant]Hello!"


def test_sandbox_blocks_unsafe_templates(ours, tmp_path):
    (tmp_path / "tokenizer.json").write_text((ours.path / "tokenizer.json").read_text())
    (tmp_path / "chat_template.jinja").write_text("{{ messages.__class__.__mro__ }}")
    with pytest.raises(ValueError, match="chat template"):
        HFTokenizer(tmp_path).apply_chat_template(CONVERSATIONS[0])


def test_missing_and_bad_files(tmp_path, ours):
    with pytest.raises(ValueError, match="tokenizer.json") as info:
        HFTokenizer(tmp_path)
    assert str(tmp_path) in str(info.value)
    (tmp_path / "tokenizer.json").write_text((ours.path / "tokenizer.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|nope|>"}))
    with pytest.raises(ValueError, match="eos_token"):
        HFTokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"pad_token": 5}))
    with pytest.raises(ValueError, match="pad_token"):
        HFTokenizer(tmp_path)


def test_load_tokenizer(tok_dir, tmp_path):
    assert isinstance(load_tokenizer("byte"), ByteTokenizer)
    loaded = load_tokenizer(tok_dir)
    assert isinstance(loaded, HFTokenizer) and loaded.eos_id == HFTokenizer(tok_dir).eos_id
    with pytest.raises(ValueError, match="nope"):
        load_tokenizer(tmp_path / "nope")
    with pytest.raises(ValueError, match="tokenizer.json"):
        load_tokenizer(tmp_path)  # a folder without tokenizer.json

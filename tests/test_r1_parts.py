"""The pieces of the R1 recipe: the R1 format and summary, the language-consistency reward
(hand-counted values), the cold-start set, the non-reasoning tasks and their scorer, the
preference pairs, the mixed-reward batch and the rejection-sampling filters."""
import json
from collections import Counter

import numpy as np
import pytest

from r1jax import mixed_reward, prompts, r1_data, rejection, rewards, tasks


def _problem(q="3+4+5", a="12"):
    return tasks.Problem(q, a, "arithmetic", {"numbers": [3, 4, 5], "ops": ["+", "+"]})


GOOD = " <think>first 3+4=7\nthen 7+5=12\nso 12</think> the result is 12. <answer>12</answer>"


# ----------------------------------------------------------------------------- format

def test_r1_format_and_summary():
    assert rewards.r1_format_reward(GOOD) == 1.0
    assert rewards.r1_format_reward(GOOD, require_summary=True) == 1.0
    assert rewards.summary_text(GOOD) == "the result is 12."
    no_summary = " <think>first 3+4=7</think> <answer>12</answer>"
    assert rewards.r1_format_reward(no_summary) == 1.0
    assert rewards.r1_format_reward(no_summary, require_summary=True) == 0.0
    assert rewards.summary_text(no_summary) == ""
    assert rewards.summary_reward(no_summary) == 0.0 and rewards.summary_reward(GOOD) == 1.0
    # empty chain of thought, empty answer, tags twice, text outside, wrong order
    for bad in (" <think></think> x <answer>1</answer>", " <think>a</think> x <answer> </answer>",
                " <think>a</think> <think>b</think> <answer>1</answer>",
                "hi <think>a</think> <answer>1</answer>",
                " <think>a</think> <answer>1</answer> bye",
                " <answer>1</answer> <think>a</think>"):
        assert rewards.r1_format_reward(bad) == 0.0, bad
        assert rewards.summary_text(bad) is None or rewards.summary_reward(bad) == 0.0
    # the R1-Zero format rejects the summary that R1's accepts
    assert rewards.format_reward(GOOD) == 0.0


def test_language_consistency_hand_counted():
    # think block: "first 3+4=7 puis 7+5=12 donc 12": en words {first}, fr {puis, donc}: 1/3
    text = " <think>first 3+4=7\npuis 7+5=12\ndonc 12</think> the result is 12. <answer>12</answer>"
    assert rewards.language_consistency_reward(text, "en") == pytest.approx(1 / 3)
    assert rewards.language_consistency_reward(text, "fr") == pytest.approx(2 / 3)
    # the summary is outside the chain of thought: French summary, English reasoning -> 1.0
    text = " <think>first 3+4=7\nthen 7+5=12\nso 12</think> le résultat est 12. <answer>12</answer>"
    assert rewards.language_consistency_reward(text, "en") == 1.0
    # no classifiable word: nothing in the wrong language
    assert rewards.language_consistency_reward(" <think>3+4=7</think> <answer>7</answer>",
                                               "en") == 1.0
    # "total" and "distance" are in both vocabularies: ignored. 2 en (then, so), 1 fr (puis)
    assert rewards.language_consistency_reward(
        "<think>total then puis so distance</think>", "en") == pytest.approx(2 / 3)


# ----------------------------------------------------------------------------- data

def test_cold_start_examples_are_careful_r1_completions():
    ex = r1_data.cold_start_examples("arithmetic", 200, 0, "r1_zero_short", num_ops=(2, 3),
                                     digits=(1, 1), ops="+")
    assert len(ex) == 200 and len({e["prompt"] for e in ex}) == 200
    for e in ex:
        q = e["prompt"].split("\n")[0][3:]
        assert tasks.split_of(q) == "train"
        assert e["prompt"] == prompts.render("r1_zero_short", q)
        assert rewards.summary_reward(e["completion"]) == 1.0
        assert rewards.extract_answer(e["completion"]) == str(eval(q))  # only digits and +
        assert rewards.language_consistency_reward(e["completion"], "en") == 1.0
        assert rewards.summary_text(e["completion"]) == f"the result is {e['answer']}."
    fr = r1_data.cold_start_examples("arithmetic", 5, 0, language="fr", digits=(1, 1), ops="+")
    assert all(rewards.language_consistency_reward(e["completion"], "fr") == 1.0 for e in fr)


def test_cold_start_from_jsonl(tmp_path):
    path = tmp_path / "cold.jsonl"
    path.write_text(json.dumps({"question": "2 apples and 3 apples?", "reasoning": "2+3=5",
                                "answer": "5"}) + "\n\n"
                    + json.dumps({"question": "q", "reasoning": "r", "answer": "1",
                                  "summary": "one."}) + "\n")
    ex = r1_data.cold_start_from_jsonl(str(path), "r1_zero")
    assert [e["completion"] for e in ex] == [
        " <think>2+3=5</think> the result is 5. <answer>5</answer>",
        " <think>r</think> one. <answer>1</answer>"]
    assert ex[0]["prompt"] == prompts.render("r1_zero", "2 apples and 3 apples?")
    assert len(r1_data.cold_start_from_jsonl(str(path), "r1_zero", n=1)) == 1
    path.write_text(json.dumps({"question": "q", "answer": "1"}) + "\n")
    with pytest.raises(ValueError, match="cold.jsonl:1: field 'reasoning'"):
        r1_data.cold_start_from_jsonl(str(path), "r1_zero")


def test_number_words():
    en = {0: "zero", 13: "thirteen", 20: "twenty", 42: "forty-two", 99: "ninety-nine"}
    fr = {0: "zéro", 17: "dix-sept", 21: "vingt et un", 42: "quarante-deux", 70: "soixante-dix",
          71: "soixante et onze", 79: "soixante-dix-neuf", 80: "quatre-vingts",
          81: "quatre-vingt-un", 91: "quatre-vingt-onze", 99: "quatre-vingt-dix-neuf"}
    for n, w in en.items():
        assert r1_data.number_word(n, "en") == w
    for n, w in fr.items():
        assert r1_data.number_word(n, "fr") == w
    for lang in ("en", "fr"):   # one word per number
        assert len({r1_data.number_word(n, lang) for n in range(100)}) == 100


def test_nonreasoning_problems_split_and_answers():
    train = r1_data.nonreasoning_problems(0, 10_000, "train")
    test = r1_data.nonreasoning_problems(0, 10_000, "test")
    assert not {p.question for p in train} & {p.question for p in test}
    facts = 2 * (200 + 3 + 81)
    assert len(train) == facts                      # every fact once, in one of two wordings
    assert 0.3 < len(test) / facts < 0.5
    assert {p.metadata["kind"] for p in test} == set(r1_data.NONREASONING_KINDS)
    assert {p.metadata["wording"] for p in train} == {0, 1}
    # Split by wording: each test question asks a train fact in the other wording.
    fact = lambda p: (p.metadata["kind"], p.metadata["lang"], p.metadata["subject"])  # noqa
    train_by_fact = {fact(p): p for p in train}
    assert len(train_by_fact) == facts
    for p in test:
        seen = train_by_fact[fact(p)]
        assert seen.answer == p.answer and seen.metadata["wording"] != p.metadata["wording"]
        assert seen.metadata["subject"] in p.question and seen.metadata["subject"] in seen.question
    words = {p.question: p for p in train + test}
    for q, answer, lang in (("forty-two in digits", "42", "en"),
                            ("write forty-two in digits", "42", "en"),
                            ("quarante-deux en chiffres", "42", "fr"),
                            ("sept en anglais", "seven", "en"),
                            ("dis sept en anglais", "seven", "en"),
                            ("seven in french", "sept", "fr"),
                            ("say first in french", "d'abord", "fr"),
                            ("first in french", "d'abord", "fr"), ("what is 3+4", "7", "en"),
                            ("calcule 3+4", "7", "fr"), ("combien font 3+4", "7", "fr")):
        if q in words:    # each fact is there in one wording at least
            assert (words[q].answer, words[q].metadata["lang"]) == (answer, lang), q
    assert sum(q in words for q in ("forty-two in digits", "write forty-two in digits")) >= 1
    # same seed, same list; a seed shuffles
    assert r1_data.nonreasoning_problems(0, 20) == train[:20]
    assert r1_data.nonreasoning_problems(1, 20) != train[:20]
    assert all(p.metadata["kind"] == "digits"
               for p in r1_data.nonreasoning_problems(0, 50, kinds=("digits",)))
    with pytest.raises(ValueError, match="kinds"):
        r1_data.nonreasoning_problems(0, 5, kinds=("poetry",))


def test_nonreasoning_score():
    p = tasks.Problem("seven in french", "sept", "nonreasoning", {"kind": "translate",
                                                                   "lang": "fr"})
    assert r1_data.nonreasoning_score(p, " <answer>sept</answer>") == 1.0
    assert r1_data.nonreasoning_score(p, "  <answer> Sept </answer>\n") == 1.0
    assert r1_data.nonreasoning_score(p, " <think>seven is sept</think> <answer>sept</answer>"
                                      ) == 0.5
    assert r1_data.nonreasoning_score(p, " <answer>seven</answer>") == 0.0   # wrong language
    assert r1_data.nonreasoning_score(p, " sept") == 0.0                     # no answer block
    ex = r1_data.nonreasoning_examples([p])
    assert ex == [{"prompt": "Q: seven in french\nanswer at once\nA:",
                   "completion": " <answer>sept</answer>"}]
    assert r1_data.nonreasoning_score(p, ex[0]["completion"]) == 1.0


def test_preference_pairs_prefer_the_concise_correct_reply():
    problems = r1_data.nonreasoning_problems(0, 40, "train")
    pairs = r1_data.preference_pairs(problems, 0)
    assert len(pairs) == 3 * len(problems)
    assert Counter(p["rejected_kind"] for p in pairs) == {
        "wrong": 40, "verbose": 40, "mixed_language": 40}
    for pr, i in zip(pairs, np.repeat(np.arange(40), 3)):
        p = problems[i]
        assert r1_data.nonreasoning_score(p, pr["chosen"]) == 1.0
        assert r1_data.nonreasoning_score(p, pr["rejected"]) < 1.0
        assert pr["prompt"] == prompts.render("at_once_short", p.question)
        if pr["rejected_kind"] == "wrong":
            assert r1_data.nonreasoning_score(p, pr["rejected"]) == 0.0
        if pr["rejected_kind"] == "mixed_language":   # words of the other language
            other = "fr" if p.metadata["lang"] == "en" else "en"
            words = pr["rejected"].split("<answer>")[0]
            assert rewards.language_consistency_reward(words, other) == 1.0


# ----------------------------------------------------------------------------- rewards

def test_reasoning_rewards_hand_computed():
    p = _problem()
    mixed = " <think>first 3+4=7\npuis 7+5=12\ndonc 12</think> <answer>12</answer>"
    wrong = " <think>first 3+4=7</think> the result is 11. <answer>11</answer>"
    r = mixed_reward.reasoning_rewards([p], [[GOOD, mixed, wrong]], accuracy_weight=1.0,
                                       format_weight=0.5, language_weight=0.3)
    np.testing.assert_allclose(r["correct"], [[1, 1, 0]])
    np.testing.assert_allclose(r["format"], [[1, 1, 1]])
    np.testing.assert_allclose(r["summary"], [[1, 0, 1]])
    np.testing.assert_allclose(r["language"], [[1, 1 / 3, 1]], rtol=1e-6)
    np.testing.assert_allclose(r["reward"], [[1.8, 1.5 + 0.1, 0.8]], rtol=1e-6)
    r = mixed_reward.reasoning_rewards([p], [[GOOD, mixed, wrong]], require_summary=True)
    np.testing.assert_allclose(r["format"], [[1, 0, 1]])
    np.testing.assert_allclose(r["reward"], [[1.5, 1.0, 0.5]])


def test_mixed_reward_batch():
    nr = tasks.Problem("seven in french", "sept", "nonreasoning", {"kind": "translate",
                                                                    "lang": "fr"})
    calls = []

    def score_fn(prompts_, completions):   # a stand-in reward model: shorter is better
        calls.append((list(prompts_), list(completions)))
        return np.array([-len(c) / 10 for c in completions])

    texts = [[GOOD, " <think>x</think> <answer>9</answer>"],
             [" <answer>sept</answer>", " <think>hmm</think> <answer>sept</answer>"]]
    fn = mixed_reward.MixedReward(score_fn, rm_weight=1.0, rule_weight=0.5,
                                  prompt_of=lambda p: "P:" + p.question, format_weight=0.5,
                                  language_weight=0.25, require_summary=True)
    out = fn([_problem(), nr], texts)
    # reasoning row: rule rewards only; the second is wrong and has no summary
    np.testing.assert_allclose(out["reward"][0], [1 + 0.5 + 0.25, 0 + 0 + 0.25])
    # non-reasoning row: rm (-len/10) + 0.5 * rule score (1, 0.5)
    lens = [len(t) for t in texts[1]]
    np.testing.assert_allclose(out["reward"][1], [-lens[0] / 10 + 0.5, -lens[1] / 10 + 0.25],
                               rtol=1e-6)
    assert calls == [(["P:seven in french"] * 2, texts[1])]   # only non-reasoning rows scored
    np.testing.assert_allclose(out["nonreasoning_rule"][1], [1.0, 0.5])
    assert np.isnan(out["nonreasoning_rule"][0]).all() and np.isnan(out["rm_score"][0]).all()
    assert np.isnan(out["reasoning_correct"][1]).all()
    np.testing.assert_allclose(out["reasoning_correct"][0], [1, 0])
    assert "correct" not in out
    # without the model, the rule score alone
    out = mixed_reward.MixedReward(None, rm_weight=0.0, rule_weight=1.0)([nr], texts[1:])
    np.testing.assert_allclose(out["reward"], [[1.0, 0.5]])
    with pytest.raises(ValueError, match="score_fn"):
        mixed_reward.MixedReward(None, rm_weight=1.0)


def test_pairwise_accuracy_counts_per_kind():
    pairs = [{"prompt": "p", "chosen": "a", "rejected": "bbb", "rejected_kind": "verbose"},
             {"prompt": "p", "chosen": "aaaa", "rejected": "b", "rejected_kind": "wrong"},
             {"prompt": "p", "chosen": "a", "rejected": "bb", "rejected_kind": "wrong"}]
    out = mixed_reward.pairwise_accuracy(lambda p, c: np.array([-len(x) for x in c]), pairs)
    assert out["pairwise_accuracy"] == pytest.approx(2 / 3)
    assert out["pairwise_accuracy_verbose"] == 1.0 and out["pairwise_accuracy_wrong"] == 0.5


# ----------------------------------------------------------------------------- rejection

def test_rejection_reasons_on_hand_made_completions():
    p = _problem()
    french = " <think>d'abord 3+4=7\npuis 7+5=12\ndonc 12</think> the result is 12. <answer>12</answer>"
    loop = (" <think>" + "then 7+5=12 " * 6 + "</think> the result is 12. <answer>12</answer>")
    cases = {
        GOOD: None,
        " <think>first 3+4=7</think> <answer>12</answer>": "malformed",   # no summary
        "first 3+4=7 so 12 answer: 12": "malformed",
        GOOD.replace("12", "13"): "wrong",
        french: "language",
        loop: "repetitive",
    }
    for text, reason in cases.items():
        assert rejection.rejection_reason(p, text) == reason, text
    assert rejection.rejection_reason(p, french, min_language=0.0) is None
    assert rejection.rejection_reason(p, loop, max_repetition=1.0) is None
    # 6 repeats of a 2-word phrase ("<think>then" the first word): 12 words, 10 3-grams,
    # 3 distinct -> 7/10 repeated
    assert -rewards.repetition_penalty(loop.split("</think>")[0]) == pytest.approx(7 / 10)
    # without a rule: the reward model's score decides
    assert rejection.rejection_reason(None, GOOD, score=0.9) is None
    assert rejection.rejection_reason(None, GOOD, score=0.1) == "low_score"


def test_filter_completions_keeps_k_distinct_and_counts_reasons():
    p = _problem()
    other = " <think>first 4+5=9\nthen 9+3=12\nso 12</think> the result is 12. <answer>12</answer>"
    third = " <think>first 3+5=8\nthen 8+4=12\nso 12</think> the result is 12. <answer>12</answer>"
    texts = [GOOD.replace("12", "13"), GOOD, GOOD + "  ", other, "junk", third]
    kept, counts = rejection.filter_completions(p, texts, keep=2)
    assert kept == [GOOD, other]
    assert counts == Counter({"kept": 2, "wrong": 1, "duplicate": 1, "malformed": 1,
                              "over_limit": 1})
    kept, counts = rejection.filter_completions(p, texts, keep=5)
    assert kept == [GOOD, other, third] and counts["kept"] == 3
    assert sum(counts.values()) == len(texts)


# ----------------------------------------------------------------------------- with a model

@pytest.fixture(scope="module")
def tiny_model():
    import jax
    from r1jax import model
    from r1jax.tokenizer import ByteTokenizer
    cfg = model.ModelConfig.preset("tiny")
    return cfg, ByteTokenizer(), model.init_params(cfg, jax.random.key(0))


def test_evaluate_extra_scores_and_rejection_sample_count_every_sample(tiny_model):
    import jax
    from r1jax import evaluation
    cfg, tok, params = tiny_model
    problems = tasks.generate("arithmetic", 0, 3, "test", digits=(1, 1), ops="+")
    seen = []

    def extra(problem, text):
        seen.append((problem.question, text))
        return {"r1_format": rewards.r1_format_reward(text), "short": float(len(text) < 20)}

    res = evaluation.evaluate(params, cfg, tok, problems, jax.random.key(1), num_samples=2,
                              max_new_tokens=12, extra_scores=extra)
    assert len(seen) == 6 and [q for q, _ in seen[::2]] == [p.question for p in problems]
    per = np.array([float(len(t) < 20) for _, t in seen]).reshape(3, 2).mean(axis=1)
    assert res["short"] == pytest.approx(per.mean())
    np.testing.assert_allclose(res["per_problem_short"], per, atol=1e-6)   # for paired diffs
    lo, hi = res["short_ci"]
    assert lo <= res["short"] <= hi
    assert "r1_format" in res and "accuracy" in res   # the old keys stay
    ex, counts = rejection.rejection_sample(params, cfg, tok, problems, jax.random.key(2),
                                            num_samples=3, keep=1, template="r1_zero_short",
                                            max_new_tokens=12)
    assert counts["samples"] == 9 and counts["problems"] == 3
    assert sum(counts[r] for r in ("kept",) + rejection.REASONS) == 9
    assert counts["kept"] == len(ex) and counts["malformed"] >= 9 - len(ex) - counts["wrong"]


def test_bt_scorer_matches_the_training_encoding(tiny_model):
    import jax
    from r1jax import verifiers
    cfg, tok, params = tiny_model
    v = verifiers.init_verifier(params, cfg, jax.random.key(3), scale=1.0)
    pairs = r1_data.preference_pairs(r1_data.nonreasoning_problems(0, 2), 0)[:4]
    batch = verifiers.make_pair_batch(tok, [p["prompt"] for p in pairs],
                                      [[p["chosen"]] for p in pairs],
                                      [[p["rejected"]] for p in pairs], length=256)
    want_c = np.asarray(verifiers.final_logits(v, cfg, batch["chosen_tokens"],
                                               batch["chosen_lengths"]))
    want_r = np.asarray(verifiers.final_logits(v, cfg, batch["rejected_tokens"],
                                               batch["rejected_lengths"]))
    score = mixed_reward.bt_scorer(v, cfg, tok, batch_size=3)   # 4 rows: a padded 2nd chunk
    got_c = score([p["prompt"] for p in pairs], [p["chosen"] for p in pairs])
    got_r = score([p["prompt"] for p in pairs], [p["rejected"] for p in pairs])
    np.testing.assert_allclose(got_c, want_c, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_r, want_r, rtol=1e-4, atol=1e-5)
    squashed = mixed_reward.bt_scorer(v, cfg, tok, batch_size=3, squash=True)
    np.testing.assert_allclose(squashed([p["prompt"] for p in pairs], [p["chosen"] for p in pairs]),
                               1 / (1 + np.exp(-want_c)), rtol=1e-4)
    orm = mixed_reward.orm_scorer(v, cfg, tok, batch_size=3)
    np.testing.assert_allclose(orm([pairs[0]["prompt"]], [pairs[0]["chosen"]]),
                               1 / (1 + np.exp(-want_c[:1])), rtol=1e-4)
    acc = mixed_reward.pairwise_accuracy(score, pairs)
    assert acc["pairwise_accuracy"] == pytest.approx(np.mean(want_c > want_r))

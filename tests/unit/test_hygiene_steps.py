"""The hygiene steps on real text (tests/data/hygiene_*: the dev corpora, cut small) and hand-made cases:
decontamination (stage2/steps/decontaminate.py), PII redaction (pii.py), URL rules (url.py)."""

from __future__ import annotations

import gzip
import json
import random
import re
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import REPO, compose_plain, write_jsonl
from oracles import contamination_plain, decont_words_plain, ngram_hash_plain
from stage2.documents import Document
from stage2.errors import Stage2Error
from stage2.stages.filter import RunInputs
from stage2.steps import Chain, Drop, Edit, Step
from stage2.steps.decontaminate import Decontaminate, DecontaminateSettings, WordBatch, ngram_words, set_name
from stage2.steps.length import Length, LengthSettings
from stage2.steps.pii import Pii, PiiSettings, find_pii, redact
from stage2.steps.url import Url, UrlSettings, url_host

DATA = REPO / "tests" / "data"


def records(name: str) -> List[Dict[str, Any]]:
    with gzip.open(DATA / name, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def doc(text: str, i: int = 1, **metadata: Any) -> Document:
    return Document(id=f"d{i}", text=text, component="c", source="s", record=i, metadata=metadata)


# ---------------------------------------------------------------- decontamination


def qa_items() -> List[Dict[str, Any]]:
    """An eval set of real question/answer pairs: stackexchange posts cut at their first blank line."""
    items = []
    for r in records("hygiene_stackexchange.jsonl.gz")[:40]:
        question, _, answer = r["text"].partition("\n\n")
        items.append({"id": r["id"], "question": question, "answer": answer})
    return items


def decontaminator(tmp_path: Path, paths: List[str], **settings: Any) -> Decontaminate:
    plain = asdict(DecontaminateSettings(paths=paths, **settings))
    return Decontaminate.from_plain(Decontaminate.prepare(plain, tmp_path / "work", RunInputs(str(tmp_path))))


def planted(item_text: str, variant: str) -> str:
    """Twenty words of an eval item, as a web page would copy them."""
    words = item_text.split()[:20]
    if variant == "verbatim":
        return " ".join(words)
    if variant == "recased":
        return " ".join(w.upper() if i % 2 else w.title() for i, w in enumerate(words))
    return "  ".join(re.sub(r"[^\w\s]", "", w) + ("," if i % 3 == 0 else "") for i, w in enumerate(words)).replace("  ", "\n", 2)


@pytest.mark.parametrize("variant", ["verbatim", "recased", "punctuation"])
def test_planted_contamination_is_found_and_clean_documents_kept(tmp_path, variant):
    items = qa_items()
    write_jsonl(tmp_path / "qa.jsonl", items)
    step = decontaminator(tmp_path, [str(tmp_path / "qa.jsonl")], columns=["question", "answer"])
    train = [r["text"] for r in records("hygiene_foldoc.jsonl.gz")[:120]]
    target = items[7]
    train[30] = train[30] + "\n\n" + planted(target["question"] + " " + target["answer"], variant) + "\nMore text follows."
    verdicts = step.judge([doc(t, i) for i, t in enumerate(train)])
    dropped = [i for i, v in enumerate(verdicts) if v is not None]
    assert dropped == [30]
    drop = verdicts[30]
    assert drop.reason == "decontaminate" and drop.values["eval_item"] == target["id"] and drop.values["eval_set"] == "qa"
    assert drop.values["ngram"] in " ".join(decont_words_plain(target["question"] + " " + target["answer"]))
    assert len(drop.values["ngram"].split()) == 13 and repr(drop.values["ngram"]) in drop.detail and target["id"] in drop.detail
    assert dict(step.tally) == {"matched:qa": 1}


@pytest.mark.slow  # over half a second
def test_verdicts_match_the_plain_rule_on_real_text(tmp_path):
    """Every document's verdict (and the item it names) is the one-window-at-a-time rule's, including short
    items matched whole, on real documents with some eval text planted in various forms."""
    rng = random.Random(5)
    items = [r["text"] for r in records("hygiene_stackexchange.jsonl.gz")[:50]]
    items += ["Lambda calculus is a formal system", "too short item", "A Turing machine"]  # 6, 3 and 3 words
    (tmp_path / "eval.txt").write_text("\n".join(" ".join(t.split()) for t in items) + "\n", encoding="utf-8")
    train = [r["text"] for r in records("hygiene_foldoc.jsonl.gz")]
    for i in rng.sample(range(len(train)), 25):
        words = rng.choice(items).split()
        start = rng.randrange(max(1, len(words) - 14))
        train[i] += " " + " ".join(words[start : start + rng.choice([5, 12, 13, 14, 30])])
    train[0] += "\nIn short, LAMBDA Calculus, is a formal system; see also A Turing machine."
    for n in (8, 13):
        step = decontaminator(tmp_path, [str(tmp_path / "eval.txt")], ngram=n, min_item_words=5)
        verdicts = step.judge([doc(t, i) for i, t in enumerate(train)])
        expected = [contamination_plain(t, [" ".join(x.split()) for x in items], n, 5) for t in train]
        assert [v is not None for v in verdicts] == [e is not None for e in expected]
        assert sum(e is not None for e in expected) >= 10
        assert verdicts[0].values["ngram"] == "lambda calculus is a formal system" and "whole 6-word item" in verdicts[0].detail
        assert not any(v is not None and v.values["ngram"] in ("too short item", "a turing machine") for v in verdicts)


def test_index_describes_the_sets_and_skips_items_below_min_words(tmp_path):
    (tmp_path / "short.txt").write_text("Lambda calculus is a formal system\ntoo short item\n" + "word " * 20 + "\n")
    step = decontaminator(tmp_path, [str(tmp_path / "short.txt")])
    meta = Decontaminate.describe({"index": step.index})
    assert meta["sets"] == [{"name": "short", "files": ["short.txt"], "items": 3, "short_items": 1, "skipped_items": 1, "ngrams": 1, "whole_items": 1}]
    assert meta["short_lengths"] == [6]


def test_eval_sets_read_with_the_dataset_readers_give_the_same_index(tmp_path):
    """jsonl.gz, json array, parquet and txt readers: the same items, the same hashes."""
    items = qa_items()[:20]
    texts = [" ".join((r["question"] + " " + r["answer"]).split()) for r in items]
    rows = [{"id": r["id"], "text": t} for r, t in zip(items, texts)]
    write_jsonl(tmp_path / "a.jsonl.gz", rows)
    (tmp_path / "b.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
    (tmp_path / "d.txt").write_text("\n".join(texts) + "\n")
    hashes = []
    for name in ("a.jsonl.gz", "b.json", "c.parquet", "d.txt"):
        step = decontaminator(tmp_path, [str(tmp_path / name)])
        hashes.append(np.load(Path(step.index) / "hashes.npy"))
    assert len(hashes[0]) > 1000 and all(np.array_equal(hashes[0], h) for h in hashes[1:])
    # the txt set names items <file>:<line>
    train = doc("Intro. " + texts[3])
    assert decontaminator(tmp_path, [str(tmp_path / "d.txt")]).judge([train])[0].values["eval_item"] == "d.txt:4"


def test_columns_are_joined_so_an_ngram_across_question_and_answer_matches(tmp_path):
    write_jsonl(tmp_path / "qa.jsonl", [{"id": "q1", "question": "one two three four five six seven", "answer": "eight nine ten eleven twelve thirteen fourteen"}])
    across = doc("five six seven eight nine ten eleven twelve thirteen fourteen and more words")
    assert decontaminator(tmp_path, [str(tmp_path / "qa.jsonl")], columns=["question", "answer"], ngram=8).judge([across])[0] is not None
    assert decontaminator(tmp_path, [str(tmp_path / "qa.jsonl")], columns=["question"], ngram=8).judge([across])[0] is None


def test_a_missing_column_is_a_one_line_error_naming_the_file_and_record(tmp_path):
    write_jsonl(tmp_path / "qa.jsonl", [{"id": "q1", "question": "a b", "answer": "c"}, {"id": "q2", "question": "d"}])
    with pytest.raises(Stage2Error, match=r"qa.jsonl: record 2: has no column 'answer'"):
        decontaminator(tmp_path, [str(tmp_path / "qa.jsonl")], columns=["question", "answer"])


def test_normalisation_ascii_fast_path_equals_the_plain_one():
    texts = [r["text"] for r in records("hygiene_foldoc.jsonl.gz")[:60]] + [r["text"] for r in records("hygiene_tldr.jsonl.gz")]
    texts += ["".join(map(chr, range(128))), "Ünïcode — “quotes” ＡＢＣ\u00a0nbsp\u200bzero-width", "tab\tand\x1cfile-sep"]
    for text in texts:
        assert [w.decode() for w in ngram_words(text)] == decont_words_plain(text), text[:80]


def test_window_hashes_equal_the_plain_polynomial():
    words = [ngram_words(r["text"]) for r in records("hygiene_web_cc.jsonl.gz")[:5]] + [[], [b"one"]]
    batch = WordBatch(words)
    for length in (1, 5, 13):
        h, text, start = batch.windows(length)
        expected = [(ngram_hash_plain(ws[i : i + length]), t, i) for t, ws in enumerate(words) for i in range(len(ws) - length + 1)]
        assert list(zip(h.tolist(), text.tolist(), start.tolist())) == expected


def test_set_names():
    assert set_name("/e/mmlu.jsonl.gz") == "mmlu" and set_name("/e/hellaswag-*.parquet") == "hellaswag" and set_name("/e/arc/*.jsonl") == "arc"


# ---------------------------------------------------------------- PII

PLACEHOLDERS = {"email": "email@example.com", "ip": "22.214.171.124"}


def test_pii_on_real_text_is_gone_and_nothing_else_changed():
    step = Pii(PiiSettings(kinds=("email", "ip")))
    docs = [doc(r["text"], i) for i, r in enumerate(records("hygiene_foldoc.jsonl.gz") + records("hygiene_tldr.jsonl.gz"))]
    verdicts = step.judge(docs)
    edited = 0
    for d, v in zip(docs, verdicts):
        if v is None:
            assert not find_pii(d.text, ("email", "ip"))
            continue
        edited += 1
        assert isinstance(v, Edit) and v.reason == "pii"
        spans = find_pii(d.text, ("email", "ip"))
        # byte diff only at the spans: the text outside them, in order, is the original's
        rebuilt, at = [], 0
        for start, end, kind in spans:
            rebuilt += [d.text[at:start], PLACEHOLDERS[kind]]
            at = end
        assert v.text == "".join(rebuilt + [d.text[at:]])
        assert not find_pii(v.text.replace("email@example.com", "").replace("22.214.171.124", ""), ("email", "ip"))
        assert step.judge([replace(d, text=v.text)]) == [None]  # idempotent: placeholders are not redacted again
    assert edited >= 100
    assert step.tally["documents"] == edited and step.tally["email"] >= 100 and step.tally["ip"] >= 3


@pytest.mark.parametrize("text,kept", [
    ("Write to John.Doe@Example.COM today.", False),
    ("ping 8.8.8.8 or 2001:4860:4860::8888 now", False),
    ("private 10.0.0.1, 192.168.1.20, 172.16.5.4, loopback 127.0.0.1, link-local 169.254.1.1", True),
    ("documentation 192.0.2.1, 198.51.100.7, 203.0.113.9, 2001:db8::1, multicast 224.0.0.1, reserved 240.0.0.1", True),
    ("IPv6 ::1, fe80::1, fc00::1 and a C++ scope std::vector, a::b, time 12:30:45", True),
    ("release v1.2.3.4, version 8.8.4.4, ver. 8.8.8.8, build 9.9.9.9, dotted 1.2.3.4.5, a1.2.3.4, 01.2.3.4", True),
    ("retina icon@2x.png", True),
])
def test_pii_rules(text, kept):
    out, spans = redact(text, ("email", "ip"), PLACEHOLDERS)
    assert (out == text) is kept, (out, spans)


def test_pii_replaces_only_the_kinds_asked_and_uses_the_set_placeholders():
    text = "mail a@b.org from 8.8.8.8"
    assert redact(text, ("ip",), PLACEHOLDERS)[0] == "mail a@b.org from 22.214.171.124"
    assert redact(text, ("email",), {"email": "<EMAIL>", "ip": "x"})[0] == "mail <EMAIL> from 8.8.8.8"
    assert redact("end of sentence 8.8.8.8.", ("ip",), PLACEHOLDERS)[0] == "end of sentence 22.214.171.124."


def test_the_chain_gives_later_steps_the_edited_text_and_a_later_drop_wins():
    seen: List[str] = []

    class Spy(Length):
        def judge(self, docs):
            seen.extend(d.text for d in docs)
            return super().judge(docs)

    pii = Pii(PiiSettings(kinds=("email",)))
    docs = [doc("x" * 30 + " a@b.org"), doc("plain text of some length"), doc("tiny c@d.org")]
    verdicts = Chain([pii, Spy(LengthSettings(25, None))]).judge(docs)
    assert seen == ["x" * 30 + " email@example.com", "plain text of some length", "tiny email@example.com"]
    assert isinstance(verdicts[0], Edit) and verdicts[0].text.endswith("email@example.com")
    assert verdicts[1] is None
    assert isinstance(verdicts[2], Drop) and verdicts[2].reason == "too_short"
    assert Chain([pii]).reasons == () and Chain([pii]).edit_reasons == ("pii",)


# ---------------------------------------------------------------- URL


def url_step(tmp_path: Path, domains: str = "", words=(), column: str = "url") -> Url:
    (tmp_path / "block.txt").write_text(domains)
    return Url(UrlSettings(blocklist=(str(tmp_path / "block.txt"),), banned_words=tuple(words)), column)


def test_url_blocklist_matches_hosts_and_subdomains_not_lookalikes(tmp_path):
    step = url_step(tmp_path, "# a comment\nwikipedia.org  # inline comment\n\n*.Example.COM\n")
    urls = {
        "https://wikipedia.org/wiki/X": "wikipedia.org",
        "https://en.wikipedia.org/wiki/X": "wikipedia.org",
        "http://user@EN.M.Wikipedia.org.:8080/p": "wikipedia.org",
        "en.wikipedia.org/no-scheme": "wikipedia.org",
        "https://notwikipedia.org/": None,
        "https://wikipedia.org.evil.net/": None,
        "https://wikipedia.organic/": None,
        "https://example.com/": "example.com",
        "https://a.b.example.com/": "example.com",
    }
    verdicts = step.judge([doc("t", i, url=u) for i, u in enumerate(urls)])
    for (url, listed), verdict in zip(urls.items(), verdicts):
        if listed is None:
            assert verdict is None, url
        else:
            assert verdict.reason == "url" and verdict.values["url_rule"] == f"blocklist:{listed}" and "block.txt:" in verdict.detail, url
    assert step.tally == {"blocklist": 6}


def test_url_banned_words_are_whole_tokens_as_datatrove_splits_them(tmp_path):
    step = url_step(tmp_path, words=["casino", "xxx"])
    urls = ["https://best-Casino.net/", "http://site.com/a/xxx/b?q=1", "https://casinos.com/", "https://myxxxsite.com/", "https://fine.org/casino_"]
    assert [v is not None for v in step.judge([doc("t", i, url=u) for i, u in enumerate(urls)])] == [True, True, False, False, True]


def test_url_on_real_web_records_with_a_nested_column_and_records_without_a_url(tmp_path):
    web = records("hygiene_web_cc.jsonl.gz")
    hosts = [url_host(r["meta"]["url"]) for r in web]
    target = hosts[10].split(".", 1)[1] if hosts[10].count(".") > 1 else hosts[10]
    step = url_step(tmp_path, target + "\n", column="meta.url")
    docs = [doc(r["text"], i, meta=r["meta"]) for i, r in enumerate(web)] + [doc("no url", 99)]
    verdicts = step.judge(docs)
    expected = [h == target or h.endswith("." + target) for h in hosts] + [False]
    assert [v is not None for v in verdicts] == expected and sum(expected) >= 1
    assert step.tally["no_url"] == 1


def test_a_blocklist_line_that_is_no_domain_fails_naming_file_and_line(tmp_path):
    (tmp_path / "bad.txt").write_text("good.org\nnot a domain\n")
    with pytest.raises(Stage2Error, match=r"bad.txt: line 2: 'not a domain' is not a domain"):
        Url.prepare({**asdict(UrlSettings(blocklist=[str(tmp_path / "bad.txt")])), "url_column": "url"}, tmp_path, RunInputs(str(tmp_path)))


# ---------------------------------------------------------------- config


@pytest.mark.slow  # over half a second
def test_url_rules_need_a_url_column_unless_a_component_opts_out(tmp_path):
    (tmp_path / "b.txt").write_text("x.org\n")
    with pytest.raises(Stage2Error, match=r"dataset.components.web has no url_column.*url_filter=false"):
        compose_plain([f"filter.url.blocklist=[{tmp_path}/b.txt]"], tmp_path).check()
    ok = ["web", "encyclopedia", "code", "noisy"]
    cfg = compose_plain([f"filter.url.blocklist=[{tmp_path}/b.txt]", "dataset.components.web.url_column=url"]
                        + [f"dataset.components.{c}.url_filter=false" for c in ok[1:]], tmp_path)
    cfg.check()
    with pytest.raises(Stage2Error, match=r"dataset.url_column is null"):
        compose_plain(["dataset=files", f"dataset.paths=[{tmp_path}/a.jsonl]", "filter.url.banned_words=[casino]"], tmp_path).check()


@pytest.mark.slow  # over half a second
def test_hygiene_steps_are_switched_on_by_their_keys_not_by_filter_quality(tmp_path):
    with pytest.raises(Stage2Error, match=r"'pii' is no quality step: its own keys switch it on"):
        compose_plain(["filter.quality=[pii]"], tmp_path).check()
    with pytest.raises(Stage2Error, match=r"filter.pii.kinds=\[email,phone\]: no kind 'phone'"):
        compose_plain(["filter.pii.kinds=[email,phone]"], tmp_path).check()
    with pytest.raises(Stage2Error, match=r"filter.decontaminate.min_item_words=20 must be 1 to filter.decontaminate.ngram=13"):
        compose_plain(["filter.decontaminate.min_item_words=20"], tmp_path).check()


@pytest.mark.slow  # over half a second
def test_hygiene_keys_change_the_digest_only_when_set(tmp_path):
    base = compose_plain([], tmp_path).digest()
    assert compose_plain(["filter.pii.kinds=[]", "dataset.components.web.url_filter=true"], tmp_path).digest() == base
    assert compose_plain(["filter.pii.kinds=[email]"], tmp_path).digest() != base
    assert compose_plain(["filter.decontaminate.ngram=8"], tmp_path).digest() != base
    assert compose_plain(["dataset.components.web.url_column=url"], tmp_path).digest() != base

"""Text for the pages (cnnlab.views.text): user text shown literally, numbers, run labels."""

from __future__ import annotations

import re

import pytest

from cnnlab.errors import CnnlabError, Problem
from cnnlab.runs.store import Run, Status
from cnnlab.views.text import (
    data_label,
    decimal,
    duration,
    error_markdown,
    inline_code,
    markdown_text,
    owned,
    problem_markdown,
    refusal,
    run_option,
    sentence,
    short,
)


def unescaped(markdown: str) -> str:
    """What CommonMark shows for text whose only Markdown is backslash escapes."""
    return re.sub(r"\\(.)", r"\1", markdown)


def bare(markdown: str, character: str) -> bool:
    """Whether `character` occurs in `markdown` without a backslash before it."""
    return re.search(r"(?<!\\)" + re.escape(character), markdown) is not None


@pytest.mark.parametrize("name", ["![x](http://e/x.png)", "**bold**", "_it_", "`code`",
                                  "$x^2$", "~~gone~~", "<b>tag</b>", "a | b", ":red[alert]",
                                  ":material/home:", "# heading", "&nbsp;", "back\\slash"])
def test_user_text_shows_literally(name):
    escaped = markdown_text(name)
    assert unescaped(escaped) == name
    for character in "[]*_`$~<>|:#&":  # "!" starts an image only before a bare "["
        assert not bare(escaped, character), (name, character)


def test_bare_urls_and_addresses_are_not_linked():
    for text in ("see http://e.org/x", "www.example.com", "me@example.com"):
        escaped = markdown_text(text)
        assert unescaped(escaped) == text
        assert "http://" not in escaped and "www." not in escaped and not bare(escaped, "@")


def test_line_starts_do_not_become_lists_or_headings():
    escaped = markdown_text("- one\n+ two\n3. three\n===")
    assert escaped.splitlines() == ["\\- one", "\\+ two", "3\\. three", "\\==="]


def test_plain_words_and_numbers_are_left_alone():
    assert markdown_text("bn-lenet trained 5,000 images (10 epochs).") == \
        "bn-lenet trained 5,000 images (10 epochs)."


def test_inline_code_survives_backticks():
    assert inline_code("lr") == "`lr`"
    assert inline_code("a`b") == "``a`b``"
    assert inline_code("`x`") == "`` `x` ``"


def test_a_problem_reads_as_field_message_and_fix_with_the_users_text_escaped():
    problem = Problem("name", "**bold** is not allowed", "rename it")
    assert problem_markdown(problem) == \
        "`name`: \\*\\*bold\\*\\* is not allowed. **Fix:** rename it."
    assert sentence("Done!") == "Done!"


def test_a_refusal_opens_its_problems_or_says_why_escaped():
    assert refusal("Not started", CnnlabError(problems=[Problem("lr", "bad", "fix")])) == (
        "Not started:")
    assert refusal("Not saved", CnnlabError("disk *full*")) == r"Not saved: disk \*full\*"


def test_an_errors_code_spans_stay_code_and_the_rest_is_escaped():
    """The fix's command shows as code (not with literal backticks); the path around it, which
    came from a setting, is escaped."""
    exc = CnnlabError("cannot open /srv/*runs*/x. Fix: run `ray start --head` or unset it")
    assert error_markdown(exc) == (
        r"cannot open /srv/\*runs\*/x. Fix\: run `ray start --head` or unset it")
    # A lone backtick opens no span and is escaped; so is every backtick of a foreign error,
    # whose text cnnlab did not write.
    assert error_markdown(CnnlabError("a ` b")) == r"a \` b"
    assert error_markdown(OSError("no `x` here")) == r"no \`x\` here"
    assert refusal("Not started", CnnlabError("set `lr`")) == "Not started: set `lr`"


@pytest.mark.parametrize("n, text", [(7_610_000_000, "7.61 G"), (46_764_746, "46.8 M"),
                                     (1500, "1.5 k"), (512, "512"), (0, "0")])
def test_counts_read_in_three_digits_and_a_unit(n, text):
    assert short(n) == text


def test_decimals_drop_trailing_zeros():
    assert [decimal(x) for x in (1.0, 1.25, 0.3333, 10)] == ["1", "1.25", "0.33", "10"]


@pytest.mark.parametrize("seconds, text", [(0, "0 s"), (42.4, "42 s"), (75, "1 min 15 s"),
                                           (600, "10 min"), (4000, "1 h 6 min"), (7200, "2 h")])
def test_durations_read_as_people_say_them(seconds, text):
    assert duration(seconds) == text


def run(**fields) -> Run:
    return Run(**{"id": "r1", "status": Status.DONE, "model": "bn-lenet", "spec": {},
                  "config": {}, "created_at": 0.0, **fields})


def test_a_run_in_a_picker_shows_its_name_status_and_accuracy():
    assert run_option(run()) == "bn-lenet r1 · done"
    assert run_option(run(), status=False) == "bn-lenet r1"  # for a picker that goes stale
    named = run(name="mine", result={"metrics": {"test_acc": 0.8123}})
    assert run_option(named, test_acc=True) == "mine · done · test acc 0.812"


def test_a_run_with_its_owner_reads_plainly_in_a_picker_and_escaped_in_markdown():
    assert owned(run(owner="Ada")) == "bn-lenet r1 · done · Ada"
    assert owned(run()) == "bn-lenet r1 · done · no owner"
    assert owned(run(owner="*Ada*", model="my_net"), markdown=True) == r"my\_net (\*Ada\*)"
    assert owned(run(), markdown=True) == "bn-lenet"  # no owner: nothing added


def test_the_data_label_says_sample_or_full_once_known():
    assert data_label(run()) is None
    assert data_label(run(data_source="sample")) == "sample"
    assert data_label(run(result={"data_source": "/usr/share/datasets/fashion-mnist"})) == "full"

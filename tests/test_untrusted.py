"""Untrusted text (core.untrusted): typed values checked at the edge, CSVs for people neutralised
(OWASP's CSV-injection rule), and the issue's injection strings round-tripping through a
catalogue, a review, the export and `inspect` as inert text."""

from __future__ import annotations

import csv
import re

import pandas as pd
import pytest

from core import workspace
from core.data.__main__ import main as data_cli
from core.data.catalogue import STYLES_FILE, load_catalogue
from core.data.demo import generate_demo
from core.labels.corrections import CORRECTIONS_FILE, export_dataset
from core.labels.store import LabelStore
from core.untrusted import check_typed, formula_like, spreadsheet_cell, spreadsheet_csv, spreadsheet_frame
from dashboard.text import WORD_JOINER, plain

from conftest import ANN, BOB

LINK = '=HYPERLINK("http://evil.example/x")'  # the formula (one argument: no comma in a CSV cell)
IMAGE = "![x](http://127.0.0.1:9/x)"  # the markdown image


@pytest.mark.parametrize("value, rule", [
    (3, "must be text, got 3"),
    ("   ", "must not be empty"),
    ("x" * 101, "must be at most 100 characters, got 101"),
    ("Red\u200b", "must not hold control or invisible characters \\(it holds U\\+200B\\)"),
    ("Red\tBlue", "must not hold control or invisible characters \\(it holds U\\+0009\\)"),
    *((f"{start}1+1", f"must not start with = \\+ - @ \\(a spreadsheet would run it as a formula\\), "
                      f"got '\\{start}1\\+1'")
      for start in "=+-@"),
])
def test_typed_values_breaking_a_rule_are_refused_naming_rule_and_value(value, rule):
    with pytest.raises(ValueError, match=f"^the label {rule}"):
        check_typed(value, "the label")


def test_typed_values_that_keep_the_rules_come_back_stripped():
    assert check_typed("  Navy Blue ", "the label") == "Navy Blue"
    assert check_typed("Tops 12\" long (café)", "the label") == "Tops 12\" long (café)"
    assert check_typed(IMAGE, "the label") == IMAGE  # markdown is plain text here: the pages never render it


def test_spreadsheet_cells_get_a_quote_only_when_a_spreadsheet_would_run_them():
    for risky in (LINK, "+1", "-1+2", "@SUM(A1)", "\tcmd", "\rcmd"):
        assert formula_like(risky) and spreadsheet_cell(risky) == "'" + risky
    for safe in ("Navy Blue", "", " =1", -3, 2.5, None, "'quoted"):
        assert spreadsheet_cell(safe) == safe
    frame = pd.DataFrame({"name": [LINK, "Shirt"], "p": [-0.5, 0.25], "ok": [True, False]},
                         index=pd.Index(["-a", "b"], name="class"))
    safe = spreadsheet_frame(frame)
    assert safe["name"].tolist() == ["'" + LINK, "Shirt"] and safe.index.tolist() == ["'-a", "b"]
    assert safe["p"].tolist() == [-0.5, 0.25] and safe["ok"].tolist() == [True, False]  # numbers left alone
    assert frame["name"].iloc[0] == LINK  # a copy: the frame itself is untouched
    text = spreadsheet_csv(frame)
    assert list(csv.reader(text.splitlines()))[1] == ["'-a", "'" + LINK, "-0.5", "True"]


@pytest.fixture
def poisoned(workspace_home, tmp_path):
    """A demo catalogue whose first row carries the issue's injection strings, in a workspace of its own."""
    demo = generate_demo(tmp_path / "demo", n=50, seed=5)
    frame = pd.read_csv(demo / STYLES_FILE, dtype=str, keep_default_na=False)
    frame.loc[0, ["baseColour", "articleType", "productDisplayName"]] = [LINK, "+cmd", f"-2+3 {IMAGE}"]
    frame.to_csv(demo / STYLES_FILE, index=False)
    return demo


def test_injection_strings_round_trip_through_review_export_and_inspect_as_inert_text(poisoned, tmp_path, capsys):
    catalogue = load_catalogue(poisoned)
    first = int(catalogue.frame["id"].iloc[0])
    assert catalogue.report.formula_values == 3
    assert catalogue.report.formula_examples[0] == f"{first} articleType: +cmd"
    store = LabelStore(workspace=workspace.workspace_dir())
    [item] = store.add_catalogue_items(catalogue, [first], ANN)
    store.review(item.item, {"baseColour": "Red"}, BOB)  # the reviewer fixes the formula away
    with pytest.raises(ValueError, match="must not start with"):
        store.review(item.item, {"usage": "@SUM(1+1)"}, BOB, new_values=["usage"])
    export_dataset(catalogue, store, tmp_path / "export", ANN)

    # corrections.csv is for people: every cell a spreadsheet would run starts with a quote.
    with open(tmp_path / "export" / CORRECTIONS_FILE, newline="") as file:
        rows = list(csv.DictReader(file))
    corrected = next(row for row in rows if row["field"] == "baseColour")
    assert (corrected["old"], corrected["new"], corrected["reviewer"]) == ("'" + LINK, "Red", "bob")
    assert not any(formula_like(value) for row in rows for value in row.values())

    # styles.csv is a dataset the app opens again: the catalogue's values stay as they are, and
    # open as the same text; inspect names them (repr: quotes and all) before anyone opens it in a spreadsheet.
    exported = load_catalogue(tmp_path / "export")
    row = exported.frame.set_index("id").loc[first]
    assert (row["baseColour"], row["articleType"], row["productDisplayName"]) == ("Red", "+cmd", f"-2+3 {IMAGE}")
    assert exported.report.formula_values == 2
    assert data_cli(["inspect", str(tmp_path / "export")]) == 0
    out = capsys.readouterr().out
    assert "  formula_values               2" in out
    assert f"    {first} articleType: '+cmd'" in out
    assert f"    {first} productDisplayName: '-2+3 {IMAGE}'" in out


@pytest.mark.parametrize("label", ["see http://evil.example/x", "HTTPS://evil.example", "www.evil.example",
                                   "ann@evil.example", "mailto:ann@evil.example"])
def test_plain_text_keeps_markdown_from_making_a_link_of_a_url_or_an_email(label):
    unescaped = plain(label).replace("\\", "")  # what markdown's text holds once escapes are resolved
    assert unescaped.replace(WORD_JOINER, "") == label  # reads the same
    # remark-gfm's literal autolinks: a URL from "http://", "https://" or "www.", an email "x@y.z"
    assert not re.search(r"(?i)https?://|www\.|[\w.+-]@[\w-]+\.", unescaped)

"""Rule resolution: built-ins ◀ defaults ◀ folder ◀ .handwatch.yaml files on the way down, nearest wins."""

from pathlib import Path

import pytest

from handwatch.config import loader, rules, schema
from handwatch.config.schema import RuleOverride
from handwatch.errors import ConfigError


def make_cfg(tmp_path, text: str) -> schema.Config:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return loader.load(p)


@pytest.fixture
def cfg(tmp_path):
    return make_cfg(
        tmp_path,
        f"""
endpoints: [{{url: "http://127.0.0.1:1/v1"}}]
defaults: {{languages: [en], settle_s: 5, preprocess: {{grayscale: true}}}}
folders:
  - path: {tmp_path}/photos
  - path: {tmp_path}/photos/recipes
    profile: recipe
    languages: [de, en]
  - path: {tmp_path}/flat
    recursive: false
""",
    )


def test_pure_resolution_order(cfg, tmp_path):
    root = tmp_path / "photos" / "recipes"
    overrides = {
        root: RuleOverride(prompt="Use metric units", preprocess={"sharpen": True}),
        root / "oma": RuleOverride(languages=["de"], preprocess={"grayscale": False}),
    }
    r = rules.resolve(cfg, root / "oma" / "x" / "img.jpg", overrides)
    assert r.folder.path == root  # deepest folder wins over the enclosing one
    assert r.rule.profile == "recipe"  # from the folder entry
    assert r.rule.languages == ("de",)  # nearest rule file
    assert r.rule.prompt == "Use metric units"  # inherited from the outer rule file
    assert r.rule.settle_s == 5  # from defaults
    assert r.rule.preprocess.grayscale is False and r.rule.preprocess.sharpen is True  # merged key by key
    assert r.rule.engine == "vlm" and r.rule.output == "{stem}.md"  # built-ins


def test_sibling_rule_file_does_not_apply(cfg, tmp_path):
    root = tmp_path / "photos"
    r = rules.resolve(cfg, root / "a" / "img.jpg", {root / "b": RuleOverride(profile="recipe")})
    assert r.rule.profile == "notes"


def test_outside_every_folder_gets_defaults(cfg, tmp_path):
    r = rules.resolve(cfg, tmp_path / "elsewhere" / "img.jpg", {})
    assert r.folder is None and r.rule.settle_s == 5 and r.rule.preprocess.grayscale


def test_non_recursive_folder_only_owns_its_direct_children(cfg, tmp_path):
    assert rules.owning_folder(cfg, tmp_path / "flat" / "a.jpg").path == tmp_path / "flat"
    assert rules.owning_folder(cfg, tmp_path / "flat" / "sub" / "a.jpg") is None


def test_rulebook_reads_and_rereads_rule_files(cfg, tmp_path):
    sub = tmp_path / "photos" / "letters"
    sub.mkdir(parents=True)
    book = rules.RuleBook(cfg)
    assert book.resolve(sub / "a.jpg").rule.profile == "notes"
    (sub / ".handwatch.yaml").write_text("profile: multilingual\nlanguages: [fr, de]\n")
    r = book.resolve(sub / "a.jpg").rule
    assert (r.profile, r.languages) == ("multilingual", ("fr", "de"))
    (sub / ".handwatch.yaml").write_text("profile: recipe\n# changed size\n")
    assert book.resolve(sub / "a.jpg").rule.profile == "recipe"


def test_bad_rule_file_names_file_and_key(cfg, tmp_path):
    sub = tmp_path / "photos"
    sub.mkdir(parents=True)
    (sub / ".handwatch.yaml").write_text("profle: recipe\n")
    with pytest.raises(ConfigError) as err:
        rules.RuleBook(cfg).resolve(sub / "a.jpg")
    assert err.value.source == str(sub / ".handwatch.yaml") and err.value.problems == [
        "profle: unknown key (did you mean `profile`?)"
    ]


def test_include_exclude_globs():
    rule = schema.Rule(include=("*.jpg", "scans/*"), exclude=("*draft*",))
    assert rules.matches(rule, Path("a.jpg"))
    assert rules.matches(rule, Path("scans/page.pdf"))
    assert not rules.matches(rule, Path("b.png"))
    assert not rules.matches(rule, Path("my-draft.jpg"))

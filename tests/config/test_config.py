"""Config validation: every problem at once, each with file and key path; locality of endpoints; path expansion."""

import tracemalloc

import pytest

from handwatch.config import loader, schema, yamlfile
from handwatch.errors import ConfigError
from tests.support.paths import REPO


def load_text(tmp_path, text: str) -> schema.Config:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return loader.load(p)


def test_every_problem_is_reported_at_once_with_key_paths(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_text(
            tmp_path,
            """
endpoints:
  - url: http://127.0.0.1:1234/v1
    max_concurency: 4
defaults:
  profile: poem
folders:
  - path: /tmp/a
  - path: /tmp/b
    languages: [english]
    preprocess: {max_side: 5}
""",
        )
    lines = err.value.lines()
    src = str(tmp_path / "c.yaml")
    assert f"{src}: endpoints[0].max_concurency: unknown key (did you mean `max_concurrency`?)" in lines
    assert any(line.startswith(f"{src}: defaults.profile:") for line in lines)
    assert any(line.startswith(f"{src}: folders[1].languages: not ISO 639") for line in lines)
    assert any(line.startswith(f"{src}: folders[1].preprocess.max_side:") for line in lines)
    assert len(lines) == 4


def test_unknown_top_level_key_is_an_error(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, "state_dirr: /tmp/x\n")
    assert err.value.problems == ["state_dirr: unknown key (did you mean `state_dir`?)"]


@pytest.mark.parametrize(
    "text, problem",
    [
        ("endpoint: []\n", "endpoint: unknown key (did you mean `endpoints`?)"),
        (
            "defaults: {engine: tesseract}\nfolders:\n  - {path: /tmp/a, langauges: [en]}\n",
            "folders[0].langauges: unknown key (did you mean `languages`?)",
        ),
        (
            "defaults: {engine: tesseract, preprocess: {deskw: true}}\n",
            "defaults.preprocess.deskw: unknown key (did you mean `deskew`?)",
        ),
        ("web: {Listen: 127.0.0.1:9}\n", "web.Listen: unknown key (did you mean `listen`?)"),
        ("languages: [en]\n", "languages: unknown key (`languages` belongs under `defaults:` or a folder entry)"),
        ("defaults: {engine: tesseract, fnord: 1}\n", "defaults.fnord: unknown key"),
    ],
)
def test_an_unknown_key_suggests_the_key_that_was_meant(tmp_path, text, problem):
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, text)
    assert err.value.problems == [problem]


def test_invalid_yaml_names_the_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, "folders:\n  - path: [unclosed\n")
    assert "line" in err.value.problems[0] and "invalid YAML" in err.value.problems[0]


@pytest.mark.parametrize("url", ["http://8.8.8.8:1234/v1", "https://1.1.1.1/v1"])
def test_public_endpoint_is_refused_without_allow_remote(tmp_path, url):
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, f"endpoints:\n  - url: {url}\n")
    assert "endpoints[0]" in err.value.problems[0] and "allow_remote: true" in err.value.problems[0]
    cfg = load_text(tmp_path, f"endpoints:\n  - url: {url}\n    allow_remote: true\n")
    assert cfg.endpoints[0].allow_remote


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:1234/v1",
        "http://localhost:8000/v1",
        "http://192.168.1.20:8000/v1",
        "http://10.0.0.5:1234/v1",
        "http://169.254.3.4:11434/v1",
        "http://[::1]:8080/v1",
        "http://gpubox:1234/v1",
        "http://gpu.lan:8000/v1",
    ],
)
def test_local_endpoints_are_accepted(tmp_path, url):
    assert load_text(tmp_path, f"endpoints:\n  - url: {url}\n").endpoints[0].url == url.rstrip("/")


@pytest.mark.parametrize(
    "host", ["134744072", "0x08080808", "0x8.0x8.0x8.0x8", "010.010.010.010", "8.8.2056", "[::ffff:8.8.8.8]", "[::ffff:808:808]"]
)
def test_public_address_in_a_numeric_disguise_is_refused(tmp_path, host):
    """inet_aton reads 134744072, 0x8.0x8.0x8.0x8 and 8.8.2056 all as 8.8.8.8. Resolution alone: nothing connects."""
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, f"endpoints:\n  - url: http://{host}:1234/v1\n")
    assert "allow_remote: true" in err.value.problems[0]


@pytest.mark.parametrize(
    "host",
    [
        "[2001:0:4136:e378:8000:63bf:3fff:fdd2]",  # Teredo: a tunnel to a host on the internet
        "[2001:3::1]",  # AMT anycast
        "[2001:20::1]",  # ORCHIDv2
        "192.0.0.9",  # PCP anycast
        "[64:ff9b::808:808]",  # NAT64: 8.8.8.8 through the network's translator
        "[2002:808:808::1]",  # 6to4 of 8.8.8.8
        "0.1.2.3",  # only 0.0.0.0 is "this host"; Linux 5.3+ may route the rest of 0/8 as unicast
    ],
)
def test_globally_reachable_addresses_inside_special_ranges_are_refused(tmp_path, host):
    """Python 3.11's `is_private` counts all of 2001::/23 and 192.0.0.0/29 as private, though parts of them
    are reachable across the internet: only the ranges that are local by definition pass without allow_remote."""
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, f"endpoints:\n  - url: http://{host}:1234/v1\n")
    assert "allow_remote: true" in err.value.problems[0]


@pytest.mark.parametrize("host", ["172.20.1.2", "[fd12:3456::1]", "[fe80::1]", "0.0.0.0", "[::]"])
def test_private_and_this_host_addresses_are_local(tmp_path, host):
    assert load_text(tmp_path, f"endpoints:\n  - url: http://{host}:1234/v1\n").endpoints


@pytest.mark.parametrize("host", ["2130706433", "0x7f.1", "127.1", "0x7f000001", "[::ffff:127.0.0.1]"])
def test_loopback_in_a_numeric_form_is_local(tmp_path, host):
    assert load_text(tmp_path, f"endpoints:\n  - url: http://{host}:1234/v1\n").endpoints


def test_duplicate_keys_are_errors_at_any_depth(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, "defaults: {engine: tesseract}\nrescan_s: 60\nrescan_s: 90\n")
    assert err.value.problems == ["line 3: rescan_s: duplicate key (also on line 2)"]
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, "defaults:\n  engine: tesseract\n  engine: vlm\n")
    assert "engine: duplicate key" in err.value.problems[0]


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    """`<<: *common` (YAML's merge key) is how people share settings between entries; the duplicate-key check
    must not turn it into 'invalid YAML', and a key written beside it overrides the merged one, as YAML says."""
    head = "defaults: &common {engine: tesseract, languages: [de]}\nfolders:\n  - path: /srv/a\n    <<: *common\n"
    cfg = load_text(tmp_path, head + "    languages: [en]\n")
    assert cfg.folders[0].engine == "tesseract" and cfg.folders[0].languages == ["en"]
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, head + "    profile: notes\n    profile: recipe\n")
    assert "profile: duplicate key" in err.value.problems[0]


def test_merge_keys_cannot_hide_a_duplicate(tmp_path):
    """A second `<<`, or a key twice inside a merged mapping, would drop a setting silently like any duplicate."""
    for text in (
        "<<: {folders: [{path: /srv/a}]}\n<<: {folders: [{path: /srv/b}]}\n",
        "<<: {folders: [{path: /srv/a}], folders: [{path: /srv/b}]}\n",
    ):
        with pytest.raises(ConfigError) as err:
            load_text(tmp_path, text)
        assert "duplicate key" in err.value.problems[0], text
    # a mapping merged into another is checked as written, not after its own merge
    (tmp_path / "m.yaml").write_text("a: &d\n  <<: {settle_s: 1}\n  settle_s: 2\nb: {<<: *d}\n")
    assert yamlfile.read_yaml(tmp_path / "m.yaml")["b"] == {"settle_s": 2}


def test_merge_keys_that_double_with_each_line_cost_little_whatever_the_pyyaml(tmp_path):
    """A few hundred bytes of merge keys that each merge the previous mapping twice would expand to 2**40 entries
    in PyYAML up to 6.0.3; a rule file anyone can drop into a synced folder must not take the daemon hours and all
    its memory. PyYAML 6.0.4 and newer merge each key node once, so there the file loads small; older ones expand
    it and the merge budget refuses it. What must hold for every PyYAML the package allows: little memory, and
    either the refusal or a small result."""
    lines = ["a0: &a0 {profile: notes}"] + [f"a{i}: &a{i} {{<<: [*a{i - 1}, *a{i - 1}]}}" for i in range(1, 41)]
    rules = tmp_path / ".handwatch.yaml"
    rules.write_text("\n".join(lines) + "\n")
    tracemalloc.start()
    try:
        data = yamlfile.read_yaml(rules, untrusted=True)
    except ConfigError as err:
        # refused by the merge budget, or first by the bound on values once aliases are expanded
        assert "merge keys copy more than 10,000 entries" in err.problems[0] or "aliases are expanded" in err.problems[0]
    else:
        assert data["a40"] == {"profile": "notes"} and len(data) == 41
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 16 << 20, f"loading took {peak >> 20} MB"


def test_merge_budget_refuses_many_distinct_merged_keys(tmp_path):
    """The budget itself, on a file every PyYAML expands the same way: 200 mappings each merging a mapping of
    100 distinct keys copy 20,000 entries, past the 10,000 a real config never nears."""
    wide = "base: &base {" + ", ".join(f"k{i}: {i}" for i in range(100)) + "}"
    lines = [wide] + [f"m{i}: {{<<: *base}}" for i in range(200)]
    rules = tmp_path / ".handwatch.yaml"
    rules.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as err:
        yamlfile.read_yaml(rules, untrusted=True)
    assert "merge keys copy more than 10,000 entries" in err.value.problems[0]


@pytest.mark.parametrize("move", ["../x", "/tmp/x", "a/../../x", "$HOME/x", "~/x", ".", "", "a/./b/.."])
def test_move_folder_must_be_a_plain_sub_folder(tmp_path, move):
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, f"defaults: {{engine: tesseract, after: {{move: '{move}'}}}}\n")
    assert err.value.problems[0].startswith("defaults.after"), err.value.problems


def test_move_folder_may_be_nested(tmp_path):
    cfg = load_text(tmp_path, "defaults: {engine: tesseract, after: {move: done/2026}}\n")
    assert cfg.defaults.after.move == "done/2026"


def test_paths_expand_home_and_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PHOTOS", str(tmp_path / "photos"))
    cfg = load_text(tmp_path, "state_dir: ~/st\ndefaults: {engine: tesseract}\nfolders:\n  - path: $PHOTOS/cam\n  - path: rel\n")
    assert cfg.state_dir == tmp_path / "home" / "st"
    assert cfg.folders[0].path == tmp_path / "photos" / "cam"
    assert cfg.folders[1].path == tmp_path / "rel"  # relative to the config file's folder


def test_vlm_folders_need_an_endpoint_and_the_error_says_how_to_add_one(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, "folders:\n  - path: /tmp/a\n")
    (problem,) = err.value.problems
    assert problem.startswith("endpoints: none configured, but folders[0] uses engine: vlm (the default). Add an endpoint")
    assert "url: http://127.0.0.1:1234/v1" in problem and "engine: tesseract" in problem


def test_output_template_must_be_safe(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, "defaults: {engine: tesseract, output: '../{stem}.md'}\n")
    assert err.value.problems[0].startswith("defaults.output:")
    with pytest.raises(ConfigError):
        load_text(tmp_path, "defaults: {engine: tesseract, output: '{title}.md'}\n")


def test_config_is_frozen(tmp_path):
    cfg = load_text(tmp_path, "defaults: {engine: tesseract}\n")
    with pytest.raises(Exception):
        cfg.rescan_s = 1


def test_shipped_example_config_is_valid():
    cfg = loader.load(REPO / "config" / "handwatch.yaml")
    assert cfg.endpoints and cfg.folders


def test_config_search_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HANDWATCH_CONFIG", str(tmp_path / "env.yaml"))
    assert loader.find_config(str(tmp_path / "explicit.yaml")) == tmp_path / "explicit.yaml"
    assert loader.find_config(None) == tmp_path / "env.yaml"
    monkeypatch.delenv("HANDWATCH_CONFIG")
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".config" / "handwatch").mkdir(parents=True)
    (tmp_path / ".config" / "handwatch" / "config.yaml").write_text("{}")
    assert loader.find_config(None) == tmp_path / ".config" / "handwatch" / "config.yaml"

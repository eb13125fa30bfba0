"""Named endpoints in rules (`endpoint:`, `second_opinion:`): what is accepted, and every wrong name refused with its
key path and the name that was meant — in the config file (exit 78) and in a `.handwatch.yaml` (its files fail)."""

from __future__ import annotations

import pytest

from handwatch.cli import check
from handwatch.config import loader, routing
from handwatch.config.rules import RuleBook
from handwatch.config.schema import SecondOpinion
from handwatch.errors import ConfigError
from handwatch.safefs import file_sig, sha256_file
from handwatch.service.worker import Worker, build
from handwatch.store.jobs import this_owner
from tests.support.daemon import tiny_png

SMALL = {"name": "small", "url": "http://127.0.0.1:1/v1"}  # never asked: nothing here reaches a server
BIG = {"name": "big", "url": "http://127.0.0.1:2/v1"}


def problems_of(write_config, data: dict) -> list[str]:
    with pytest.raises(ConfigError) as err:
        loader.load(write_config({"endpoints": [SMALL, BIG], **data}))
    return err.value.problems


def test_an_unknown_name_in_the_config_file_is_a_config_error_exit_78_naming_the_key_and_the_name_meant(
    inbox, write_config, run_cli
):
    cfg = write_config({"endpoints": [SMALL, BIG], "folders": [{"path": str(inbox), "endpoint": "bgi"}]})
    res = run_cli("check", "-c", cfg)
    assert res.returncode == 78, res.stdout + res.stderr
    assert (
        f"config error: {cfg}: folders[0].endpoint: no endpoint is called 'bgi' (the names are 'small', 'big'); "
        "did you mean 'big'?"
    ) in res.stderr


@pytest.mark.parametrize(
    "data, problem",
    [
        (
            {"folders": [{"path": "/tmp/a"}, {"path": "/tmp/b", "endpoint": ["big", "smal"]}]},
            "folders[1].endpoint: no endpoint is called 'smal' (the names are 'small', 'big'); did you mean 'small'?",
        ),
        (
            {"defaults": {"second_opinion": "huge"}},
            "defaults.second_opinion: no endpoint is called 'huge' (the names are 'small', 'big')",  # nothing close
        ),
        (
            {"folders": [{"path": "/tmp/a", "second_opinion": {"endpoint": "Big", "when": "always"}}]},
            "folders[0].second_opinion: no endpoint is called 'Big' (the names are 'small', 'big'); did you mean 'big'?",
        ),
        (
            {"folders": [{"path": "/tmp/a", "endpoint": ["small", "big"], "second_opinion": "big"}]},
            "folders[0].second_opinion: 'big' also serves the first reading (endpoint: ['small', 'big']); "
            "a second opinion must come from another endpoint",
        ),
        (
            {"defaults": {"second_opinion": "small"}, "folders": [{"path": "/tmp/a", "endpoint": "small"}]},
            "folders[0].second_opinion: 'small' also serves the first reading (endpoint: ['small']); "
            "a second opinion must come from another endpoint",
        ),
    ],
)
def test_wrong_names_in_the_config_file_are_refused_with_their_key_path(write_config, data, problem):
    assert problems_of(write_config, data) == [problem]


def test_the_only_endpoint_cannot_be_the_second_opinion(write_config):
    with pytest.raises(ConfigError) as err:
        loader.load(write_config({"endpoints": [BIG], "folders": [{"path": "/tmp/a", "second_opinion": "big"}]}))
    assert err.value.problems == [
        "folders[0].second_opinion: 'big' is the only endpoint, so it would read the page twice; "
        "add another endpoint for the first reading"
    ]


def test_a_tesseract_folder_may_have_the_only_endpoint_as_its_second_opinion(write_config):
    """Tesseract reads first and no endpoint does, so the only endpoint reads nothing twice; the pipeline does
    this (service/second.py prepares the page for the VLM whatever the rule's engine), the check refuses it."""
    cfg = loader.load(
        write_config({"endpoints": [BIG], "folders": [{"path": "/tmp/a", "engine": "tesseract", "second_opinion": "big"}]})
    )
    assert cfg.folder_rule(cfg.folders[0]).second_opinion == SecondOpinion(endpoint="big")


def test_duplicate_endpoint_names_are_refused(write_config):
    data = {"endpoints": [SMALL, BIG, {**BIG, "url": "http://127.0.0.1:3/v1"}], "folders": [{"path": "/tmp/a"}]}
    with pytest.raises(ConfigError) as err:
        loader.load(write_config(data))
    assert err.value.problems == ["endpoints[2].name: 'big' is already the name of endpoints[1]"]


def test_a_name_when_no_endpoint_has_one_says_how_to_give_one(write_config):
    data = {"endpoints": [{"url": "http://127.0.0.1:1/v1"}], "folders": [{"path": "/tmp/a", "endpoint": "gpu"}]}
    with pytest.raises(ConfigError) as err:
        loader.load(write_config(data))
    assert err.value.problems == [
        "folders[0].endpoint: no endpoint is called 'gpu': no endpoint has a `name:` yet (add `name: gpu` to one)"
    ]


@pytest.mark.parametrize(
    "field, value, problem",
    [
        ("second_opinion", True, "name the endpoint that reads the second time, like `second_opinion: big`"),
        ("endpoint", [], "Tuple should have at least 1 item after validation, not 0"),
    ],
)
def test_malformed_values_are_refused_at_their_key(write_config, field, value, problem):
    found = problems_of(write_config, {"folders": [{"path": "/tmp/a", field: value}]})
    assert found == [f"folders[0].{field}: {problem}"]


@pytest.mark.parametrize(
    "value, key",
    [
        ({"endpoint": "big", "when": "sometimes"}, "folders[0].second_opinion.when: "),
        ({"endpiont": "big"}, "folders[0].second_opinion.endpiont: unknown key (did you mean `endpoint`?)"),
        ({"endpoint": "big", "when": "always", "extra": 1}, "folders[0].second_opinion.extra: unknown key"),
    ],
    ids=["a wrong when", "a misspelt key", "an unknown key"],
)
def test_a_malformed_second_opinion_mapping_is_refused_at_its_own_key(write_config, value, key):
    """As `after:` is (loader.problems_of): the key path a person wrote, not pydantic's name for the union's
    branch (`second_opinion.SecondOpinion.when`), and no complaint from the other branch (`Input should be False`)."""
    found = problems_of(write_config, {"folders": [{"path": "/tmp/a", "second_opinion": value}]})
    assert any(p.startswith(key) for p in found), found
    assert not [p for p in found if "SecondOpinion" in p or "should be False" in p], found


def test_a_name_or_a_list_of_names_in_order_of_preference(write_config):
    cfg = loader.load(
        write_config(
            {
                "endpoints": [SMALL, BIG, {"name": "spare", "url": "http://127.0.0.1:3/v1"}],
                "folders": [
                    {"path": "/tmp/one", "endpoint": "big"},
                    {"path": "/tmp/two", "endpoint": ["spare", "small"], "second_opinion": {"endpoint": "big", "when": "always"}},
                    {"path": "/tmp/rest", "second_opinion": "small"},
                ],
            }
        )
    )
    one, two, rest = (cfg.folder_rule(f) for f in cfg.folders)
    assert one.endpoint == ("big",) and routing.first_route(one, cfg.endpoints) == (1,)
    assert one.second_opinion is None and routing.second_route(one, cfg.endpoints) == ()
    assert two.endpoint == ("spare", "small") and routing.first_route(two, cfg.endpoints) == (2, 0)  # the order given
    assert two.second_opinion == SecondOpinion(endpoint="big", when="always") and routing.second_route(two, cfg.endpoints) == (1,)
    assert rest.second_opinion == SecondOpinion(endpoint="small", when="needs_review")
    assert routing.first_route(rest, cfg.endpoints) == (1, 2)  # every endpoint but the second opinion's


# --- rule files -------------------------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path, write_config):
    """A watched folder with a sub-folder for a rule file, the folder routed to `small`, read again by `big`."""
    root = tmp_path / "photos"
    (root / "letters").mkdir(parents=True)
    path = write_config(
        {"endpoints": [SMALL, BIG], "folders": [{"path": str(root), "endpoint": "small", "second_opinion": "big"}]}
    )
    return path, root


@pytest.mark.parametrize(
    "rule_file, problem",
    [
        (
            "endpoint: bgi\n",
            "endpoint: no endpoint is called 'bgi' (the names are 'small', 'big'); did you mean 'big'?",
        ),
        (
            "second_opinion: {endpoint: smal, when: always}\n",
            "second_opinion: no endpoint is called 'smal' (the names are 'small', 'big'); did you mean 'small'?",
        ),
        (
            "endpoint: [small, big]\n",  # big is the folder's second opinion
            "second_opinion: 'big' also serves the first reading (endpoint: ['small', 'big']); "
            "a second opinion must come from another endpoint",
        ),
        (
            "second_opinion: small\n",  # small is the folder's first reading
            "second_opinion: 'small' also serves the first reading (endpoint: ['small']); "
            "a second opinion must come from another endpoint",
        ),
    ],
)
def test_a_wrong_name_in_a_rule_file_is_an_error_of_that_file(tree, rule_file, problem):
    cfg_path, root = tree
    (root / "letters" / ".handwatch.yaml").write_text(rule_file)
    book = RuleBook(loader.load(cfg_path))
    with pytest.raises(ConfigError) as err:
        book.resolve(root / "letters" / "a.jpg")
    assert err.value.source == str(root / "letters" / ".handwatch.yaml") and err.value.problems == [problem]
    assert book.resolve(root / "b.jpg").rule.endpoint == ("small",)  # the rest of the folder is not its business


def test_the_files_below_a_wrong_rule_file_fail_with_its_reason(tree):
    cfg_path, root = tree
    (root / "letters" / ".handwatch.yaml").write_text("endpoint: bgi\n")
    page = tiny_png(root / "letters" / "a.png", 1)
    db, queue, pipeline, candidates, _ = build(loader.load(cfg_path))
    try:
        queue.enqueue(page, sha256_file(page), file_sig(page))
        assert Worker(queue, pipeline, candidates).handle(queue.claim(this_owner(), 600)) == "failed"
        assert queue.state_of(page)["reason"] == (
            f"{root / 'letters' / '.handwatch.yaml'}: endpoint: no endpoint is called 'bgi' "
            "(the names are 'small', 'big'); did you mean 'big'?"
        )
    finally:
        db.close()


def test_check_reports_a_wrong_name_in_a_folders_own_rule_file_as_a_config_error(tree):
    cfg_path, root = tree
    (root / ".handwatch.yaml").write_text("endpoint: smal\n")
    found = list(check.run(loader.load(cfg_path)))
    errors = [f for f in found if f.level == "error" and f.subject == f"folder {root}"]
    assert [f.text for f in errors] == [
        f"{root / '.handwatch.yaml'}: endpoint: no endpoint is called 'smal' (the names are 'small', 'big'); "
        "did you mean 'small'?"
    ]
    assert check.exit_code(found) == 78


def test_second_opinion_false_in_a_rule_file_turns_it_off_below_it(tree):
    cfg_path, root = tree
    (root / "letters" / ".handwatch.yaml").write_text("second_opinion: false\nendpoint: [big, small]\n")
    cfg = loader.load(cfg_path)
    book = RuleBook(cfg)
    letters, rest = book.resolve(root / "letters" / "a.jpg").rule, book.resolve(root / "a.jpg").rule
    assert letters.second_opinion is None and routing.second_route(letters, cfg.endpoints) == ()
    assert letters.endpoint == ("big", "small") and routing.first_route(letters, cfg.endpoints) == (1, 0)
    assert rest.second_opinion == SecondOpinion(endpoint="big") and rest.endpoint == ("small",)


def test_a_rule_file_may_route_its_subtree_and_name_a_second_opinion(tree):
    cfg_path, root = tree
    (root / "letters" / ".handwatch.yaml").write_text("endpoint: big\nsecond_opinion: {endpoint: small, when: always}\n")
    deeper = root / "letters" / "old"
    deeper.mkdir()
    (deeper / ".handwatch.yaml").write_text("languages: [de]\n")
    cfg = loader.load(cfg_path)
    rule = RuleBook(cfg).resolve(deeper / "a.jpg").rule  # the nearest file naming endpoints answers for them
    assert rule.endpoint == ("big",) and rule.second_opinion == SecondOpinion(endpoint="small", when="always")
    assert routing.first_route(rule, cfg.endpoints) == (1,) and routing.second_route(rule, cfg.endpoints) == (0,)


def test_a_rule_file_may_not_reach_an_endpoint_its_folder_does_not_use(tmp_path, write_config):
    """A `.handwatch.yaml` is anyone's who can write into the folder: it may only choose among the endpoints the
    folder's config entry uses, never send the folder's pages to another (a remote one, say)."""
    root = tmp_path / "private"
    (root / "sub").mkdir(parents=True)
    cloud = {"name": "cloud", "url": "https://vision.example.net/v1", "allow_remote": True}
    cfg = loader.load(
        write_config(
            {"endpoints": [SMALL, BIG, cloud], "folders": [{"path": str(root), "endpoint": "small", "second_opinion": "big"}]}
        )
    )
    book = RuleBook(cfg)
    for text, key in (("endpoint: cloud\n", "endpoint"), ("second_opinion: {endpoint: cloud, when: always}\n", "second_opinion")):
        (root / "sub" / ".handwatch.yaml").write_text(text)
        with pytest.raises(ConfigError) as err:
            book.resolve(root / "sub" / "a.jpg")
        assert err.value.problems == [
            f"{key}: 'cloud' is not an endpoint this folder's config entry uses ('big', 'small'); "
            "a rule file may only choose among those"
        ]
    (root / "sub" / ".handwatch.yaml").write_text("endpoint: big\nsecond_opinion: small\n")  # within them: fine
    assert book.resolve(root / "sub" / "a.jpg").rule.endpoint == ("big",)


def test_a_folder_without_endpoint_keys_lets_its_rule_files_choose_any_endpoint(write_config, tmp_path):
    root = tmp_path / "open"
    root.mkdir()
    cfg = loader.load(write_config({"endpoints": [SMALL, BIG], "folders": [{"path": str(root)}]}))
    (root / ".handwatch.yaml").write_text("endpoint: big\nsecond_opinion: small\n")
    assert RuleBook(cfg).resolve(root / "a.jpg").rule.endpoint == ("big",)


def test_names_are_taken_once_each_and_at_most_a_hundred(write_config):
    cfg = loader.load(
        write_config({"endpoints": [SMALL, BIG], "folders": [{"path": "/tmp/a", "endpoint": ["big", "small", "big"]}]})
    )
    assert cfg.folder_rule(cfg.folders[0]).endpoint == ("big", "small")
    problems = problems_of(write_config, {"folders": [{"path": "/tmp/a", "endpoint": ["big"] * 101}]})
    assert problems == ["folders[0].endpoint: 101 names: a folder names at most 100 endpoints"]

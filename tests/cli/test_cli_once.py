"""`handwatch once` and `handwatch check` end to end: the real CLI in a subprocess, the fake server over HTTP."""

import socket

import pytest
import yaml

from tests.support.pages import draw_page


@pytest.fixture
def photo(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    path = inbox / "IMG_0001.jpg"
    draw_page(["Buy flour and sugar"], size=(4000, 3000), font_size=160).save(path, quality=90)
    return path


def test_once_writes_markdown_and_prints_its_path(tmp_path, photo, fake_openai, write_config, run_cli):
    cfg = write_config({"endpoints": [{"url": fake_openai.url}], "folders": [{"path": str(photo.parent)}]})
    fake_openai.reply("```markdown\nBuy flour and sugar\n```")
    res = run_cli("once", "-c", cfg, photo)
    assert res.returncode == 0, res.stderr
    out = photo.with_suffix(".md")
    assert res.stdout.strip() == str(out)
    head, body = out.read_text().split("---\n")[1:3]
    meta = yaml.safe_load(head)
    assert meta["source"] == "IMG_0001.jpg" and meta["model"] == "fake-vl-7b" and meta["pages"] == 1
    assert meta["needs_review"] is False and meta["review_reasons"] == []
    assert body.strip() == "Buy flour and sugar"
    req = fake_openai.requests[0]
    assert max(req.image_size) <= 1288 and req.image_bytes < 300_000


def test_once_uses_the_folder_rules(tmp_path, photo, fake_openai, write_config, run_cli):
    cfg = write_config({"endpoints": [{"url": fake_openai.url}], "folders": [{"path": str(photo.parent), "languages": ["fr"]}]})
    (photo.parent / ".handwatch.yaml").write_text("prompt: Dates are day/month/year.\n")
    res = run_cli("once", "-c", cfg, photo)
    assert res.returncode == 0, res.stderr
    assert "French" in fake_openai.requests[0].prompt and "day/month/year" in fake_openai.requests[0].prompt
    assert "languages: [fr]" in photo.with_suffix(".md").read_text()


def test_once_on_a_file_that_is_not_an_image_exits_65(tmp_path, fake_openai, write_config, run_cli):
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a photo")
    cfg = write_config({"endpoints": [{"url": fake_openai.url}]})
    res = run_cli("once", "-c", cfg, bad)
    assert res.returncode == 65
    assert "notes.jpg: not a JPEG file" in res.stderr
    assert not fake_openai.requests and not bad.with_suffix(".md").exists()


def test_once_with_endpoint_refusing_exits_69_naming_the_url(tmp_path, photo, write_config, run_cli):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    s.close()
    cfg = write_config({"endpoints": [{"url": url, "model": "m"}]})
    res = run_cli("once", "-c", cfg, photo)
    assert res.returncode == 69, res.stderr
    assert url in res.stderr


def test_config_error_exits_78_with_key_path(tmp_path, photo, write_config, run_cli):
    cfg = write_config({"endpoints": [{"url": "http://127.0.0.1:1/v1", "modle": "x"}]})
    res = run_cli("once", "-c", cfg, photo)
    assert res.returncode == 78
    assert f"{cfg}: endpoints[0].modle: unknown key" in res.stderr


def test_usage_error_exits_2(run_cli):
    assert run_cli("once").returncode == 2
    assert run_cli("frobnicate").returncode == 2


def test_once_refuses_to_overwrite_an_edited_markdown(tmp_path, photo, fake_openai, write_config, run_cli):
    cfg = write_config({"endpoints": [{"url": fake_openai.url}]})
    assert run_cli("once", "-c", cfg, photo).returncode == 0
    md = photo.with_suffix(".md")
    md.write_text(md.read_text() + "\nMy correction.\n")
    res = run_cli("once", "-c", cfg, photo)
    assert res.returncode == 1 and "edited since handwatch wrote it" in res.stderr
    assert md.read_text().endswith("My correction.\n")


def test_logs_are_json_lines_when_not_on_a_terminal(tmp_path, photo, fake_openai, write_config, run_cli):
    import json

    cfg = write_config({"endpoints": [{"url": fake_openai.url}]})
    res = run_cli("once", "-c", cfg, photo)
    events = [json.loads(line) for line in res.stderr.splitlines() if line.startswith("{")]
    done = [e for e in events if e["event"] == "file.transcribed"]
    assert done and done[0]["path"] == str(photo) and done[0]["pages"] == 1 and "duration_ms" in done[0]
    assert all("." in e["event"] and "level" in e and "timestamp" in e for e in events)


def test_pdf_pages_are_separate_requests_joined_with_markers(tmp_path, fake_openai, write_config, run_cli):
    pages = [draw_page([f"Page {i} text"], size=(1240, 1754)) for i in (1, 2, 3)]
    pdf = tmp_path / "scan.pdf"
    pages[0].save(pdf, save_all=True, append_images=pages[1:], resolution=150)
    fake_openai.reply("first page", "second page", "third page")
    cfg = write_config({"endpoints": [{"url": fake_openai.url, "max_concurrency": 1}]})
    res = run_cli("once", "-c", cfg, pdf)
    assert res.returncode == 0, res.stderr
    text = (tmp_path / "scan.md").read_text()
    assert "pages: 3\n" in text
    body = text.split("---\n", 2)[2]
    assert body == "\n<!-- page 1 -->\n\nfirst page\n\n<!-- page 2 -->\n\nsecond page\n\n<!-- page 3 -->\n\nthird page\n"
    assert [max(r.image_size) for r in fake_openai.requests] == [1288, 1288, 1288]


def test_heic_from_an_iphone_end_to_end(tmp_path, fake_openai, write_config, run_cli):
    import pillow_heif

    pillow_heif.register_heif_opener()
    img = tmp_path / "IMG_0042.HEIC"
    draw_page(["Buy flour"], size=(4032, 3024), font_size=200).save(img, quality=80)
    cfg = write_config({"endpoints": [{"url": fake_openai.url}]})
    res = run_cli("once", "-c", cfg, img)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "IMG_0042.md").exists()
    assert fake_openai.requests[0].image_size == (1288, 966)

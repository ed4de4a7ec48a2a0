"""Fetching files: missing repos, files and paths, corrupt files, symlinks out of the cache
and network errors are clear HubErrors."""

import http.server
import json
import threading

import pytest
from huggingface_hub import constants

from sae_core.hub.fetch import HubError
from sae_core.hub.load import load_pretrained
from tests.hub.repos import REV, put_repo, v6_cfg


def test_missing_repo_file_paths_and_corrupt_files(tmp_path, lm):
    with pytest.raises(HubError, match="'org/absent' is not in the local cache"):
        load_pretrained("org/absent", "sae", cache_dir=tmp_path)
    cache = put_repo(tmp_path, "org/no-weights", {"sae/cfg.json": v6_cfg()})
    with pytest.raises(HubError, match=r"'sae/sae_weights\.safetensors' of repository "
                                       r"'org/no-weights'"):
        load_pretrained("org/no-weights", "sae", cache_dir=cache)
    put_repo(tmp_path, "org/junk", {"sae/cfg.json": b"{not json",
                                    "w/cfg.json": v6_cfg(), "w/sae_weights.safetensors": b"xx"})
    with pytest.raises(HubError, match=r"org/junk/sae/cfg\.json is not valid JSON"):
        load_pretrained("org/junk", "sae", cache_dir=tmp_path)
    with pytest.raises(HubError, match="corrupt or truncated"):
        load_pretrained("org/junk", "w", cache_dir=tmp_path)
    for path in ("../models--org--junk/w", "/etc", "a/../../b"):
        with pytest.raises(HubError, match="points outside the repository"):
            load_pretrained("org/junk", path, cache_dir=tmp_path)
    with pytest.raises(HubError, match="neither a SAELens config"):
        put_repo(tmp_path, "org/other", {"x/cfg.json": {"foo": 1}})
        load_pretrained("org/other", "x", cache_dir=tmp_path)


def test_symlink_leaving_the_cache_is_rejected(tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(v6_cfg()))
    cache = tmp_path / "cache"
    snap = cache / "models--org--evil" / "snapshots" / REV / "sae"
    snap.mkdir(parents=True)
    (snap / "cfg.json").symlink_to(outside)
    (cache / "models--org--evil" / "refs").mkdir()
    (cache / "models--org--evil" / "refs" / "main").write_text(REV)
    with pytest.raises(HubError, match="outside the Hub cache"):
        load_pretrained("org/evil", "sae", cache_dir=cache)


@pytest.fixture
def stub_hub(monkeypatch):
    """A local stand-in for the Hub API answering 404s as huggingface.co does."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound" if "/nope/" in self.path
                             else "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        url + "/{repo_id}/resolve/{revision}/{filename}")
    yield
    server.shutdown()


def test_online_errors_name_the_repo_and_file(tmp_path, stub_hub):
    with pytest.raises(HubError, match="repository 'org/nope' was not found on the Hugging"):
        load_pretrained("org/nope", "layers.3", cache_dir=tmp_path)
    with pytest.raises(HubError, match=r"'layers\.3/cfg\.json' is missing from "
                                       r"repository 'org/yes'"):
        load_pretrained("org/yes", "layers.3", cache_dir=tmp_path)

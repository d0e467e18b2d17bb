"""The local index (uploads.py, uploadform.py, views/uploads.py) in one process:
uploads checked and kept, refusals that keep nothing, precedence over the upstream, yanks."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import zipfile

import pytest
import responses
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.test import encode_multipart

from pypicache import config
from pypicache.cachedir import CacheDir
from pypicache.s3 import S3Storage
from pypicache.uploads import Exists, LocalIndex, Upload
from pypicache.uploadform import allowed

from .test_auth import _htpasswd
from .wheels import make_sdist, make_wheel

JSON = "application/vnd.pypi.simple.v1+json"


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


ALICE, BOB, CAROL = _basic("alice", "a-password"), _basic("bob", "b-password"), _basic("carol", "c-password")


@pytest.fixture
def users(tmp_path):
    return _htpasswd(tmp_path / "htpasswd", alice="a-password", bob="b-password",
                     carol="c-password")


@pytest.fixture
def uploading(make_app, users):
    def make(**overrides):
        settings = {"uploads": True, "auth_file": users, "upload_max_size": 1 << 20,
                    "uploaders": {"alice": ("*",), "carol": ("team-*",)}}
        return make_app(**(settings | overrides))
    return make


@pytest.fixture
def client(uploading):
    return uploading().test_client()


def form(filename: str, data: bytes, name: str | None = None, version: str | None = None,
         **fields) -> dict:
    """The fields twine sends, digests of `data` unless given."""
    wheel = filename.endswith(".whl")
    stem = filename.split("-")
    values = {":action": "file_upload", "protocol_version": "1", "metadata_version": "2.1",
              "name": name or stem[0], "version": version or stem[1].removesuffix(".tar.gz"),
              "filetype": "bdist_wheel" if wheel else "sdist", "pyversion": "py3" if wheel else "source",
              "sha256_digest": hashlib.sha256(data).hexdigest(),
              "md5_digest": hashlib.md5(data).hexdigest()}
    values.update(fields)
    values = {k: v for k, v in values.items() if v is not None}
    return values | {"content": FileStorage(io.BytesIO(data), filename)}


def post(client, filename, data, auth=ALICE, **fields):
    # Encoded here: the test client spools a big body to a temp file that it leaves open when
    # the app does not read the body (an early 413).
    boundary, body = encode_multipart(MultiDict(form(filename, data, **fields)))
    return client.post("/legacy/", data=body, headers=auth,
                       content_type=f"multipart/form-data; boundary={boundary}")


def stored(app) -> list[str]:
    root = app.config["PYPICACHE"].cache_dir / "uploads"
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.exists() else []


def temps(app) -> list[str]:
    tmp = app.config["PYPICACHE"].cache_dir / "tmp"
    return [p.name for p in tmp.iterdir() if p.suffix == ".part"] if tmp.exists() else []


def page(client, project="team-pkg", auth=ALICE):
    response = client.get(f"/simple/{project}/", headers={"Accept": JSON} | auth)
    assert response.status_code == 200, response.data
    return response.get_json()


def test_a_wheel_and_an_sdist_are_kept_and_listed(client):
    wheel, wheel_bytes = make_wheel("team-pkg", "1.0", requires_python=">=3.8")
    sdist, sdist_bytes = make_sdist("team-pkg", "1.0", requires_python=">=3.8")
    assert post(client, wheel, wheel_bytes).status_code == 200
    assert post(client, sdist, sdist_bytes).status_code == 200
    data = page(client)
    files = {f["filename"]: f for f in data["files"]}
    assert set(files) == {wheel, sdist}
    entry = files[wheel]
    assert entry["hashes"] == {"sha256": hashlib.sha256(wheel_bytes).hexdigest()}
    assert entry["size"] == len(wheel_bytes) and entry["requires-python"] == ">=3.8"
    assert entry["upload-time"].endswith("Z")
    assert entry["url"].endswith(f"/packages/local.uploads/team-pkg/{wheel}")
    assert "core-metadata" not in files[sdist]
    metadata = client.get(entry["url"].split("/packages/", 1)[0].replace("../..", "") +
                          f"/packages/local.uploads/team-pkg/{wheel}.metadata", headers=ALICE)
    assert metadata.status_code == 200
    assert entry["core-metadata"] == {"sha256": hashlib.sha256(metadata.data).hexdigest()}
    assert b"Name: team-pkg" in metadata.data
    assert data["versions"] == ["1.0"]
    got = client.get(f"/packages/local.uploads/team-pkg/{wheel}", headers=ALICE)
    assert got.data == wheel_bytes and "immutable" in got.headers["Cache-Control"]
    part = client.get(f"/packages/local.uploads/team-pkg/{wheel}",
                      headers=ALICE | {"Range": "bytes=0-9", "If-Range": got.headers["ETag"]})
    assert part.status_code == 206 and part.data == wheel_bytes[:10]
    html = client.get("/simple/team-pkg/", headers=ALICE).data.decode()
    assert f">{wheel}</a>" in html and 'data-requires-python="&gt;=3.8"' in html
    assert temps(client.application) == []


def test_an_existing_file_is_a_409_and_keeps_the_first(client):
    wheel, data = make_wheel("team-pkg", "1.0")
    assert post(client, wheel, data).status_code == 200
    _, other = make_wheel("team-pkg", "1.0", payload=10)
    again = post(client, wheel, other)
    assert again.status_code == 409 and "exists" in again.status
    assert client.get(f"/packages/local.uploads/team-pkg/{wheel}", headers=ALICE).data == data
    assert len(page(client)["files"]) == 1
    assert client.get("/packages/local.uploads/team-pkg/index.json", headers=ALICE).status_code == 404


def test_no_login_is_a_401_that_asks_for_one(client):
    wheel, data = make_wheel("team-pkg", "1.0")
    response = post(client, wheel, data, auth={})
    assert response.status_code == 401 and "Basic" in response.headers["WWW-Authenticate"]
    assert stored(client.application) == []


def test_uploads_need_a_login_with_the_dashboard_scope_too(uploading):
    client = uploading(auth_scope="dashboard").test_client()
    wheel, data = make_wheel("team-pkg", "1.0")
    assert post(client, wheel, data, auth={}).status_code == 401
    assert post(client, wheel, data, auth=_basic("alice", "wrong")).status_code == 401
    assert post(client, wheel, data).status_code == 200


@pytest.mark.parametrize("auth, project, reason", [
    (BOB, "team-pkg", "bob may not upload here"),  # a user of the file, not an uploader
    (CAROL, "other-pkg", "carol may not upload files of other-pkg"),  # not her projects
])
def test_users_and_projects_not_allowed_are_403(client, auth, project, reason):
    wheel, data = make_wheel(project, "1.0")
    response = post(client, wheel, data, auth=auth)
    assert response.status_code == 403 and reason in response.status
    assert stored(client.application) == []


def test_a_per_project_uploader_uploads_her_projects(client):
    wheel, data = make_wheel("Team_Tools", "2.0")
    assert post(client, wheel, data, auth=CAROL).status_code == 200
    assert [f["filename"] for f in page(client, "team-tools")["files"]] == [wheel]


def _truncated(client):
    wheel, data = make_wheel("team-pkg", "1.0")
    body = (b"--b\r\nContent-Disposition: form-data; name=\":action\"\r\n\r\nfile_upload\r\n"
            b"--b\r\nContent-Disposition: form-data; name=\"content\"; filename=\"" + wheel.encode()
            + b"\"\r\nContent-Type: application/octet-stream\r\n\r\n" + data[:100])
    return client.post("/legacy/", data=body, headers=ALICE,
                       content_type="multipart/form-data; boundary=b")


def _relabelled(old: str, new: str) -> tuple[str, bytes]:
    """A wheel of team-pkg 1.0 whose METADATA says `new` where it said `old`."""
    filename, data = make_wheel("team-pkg", "1.0")
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            content = source.read(info)
            if info.filename.endswith("/METADATA"):
                content = content.replace(old.encode(), new.encode())
            target.writestr(info, content)
    return filename, out.getvalue()


REFUSALS = {
    "bad sha256": (lambda c: post(c, *make_wheel("team-pkg", "1.0"), sha256_digest="0" * 64),
                   400, "sha256_digest"),
    "bad md5": (lambda c: post(c, *make_wheel("team-pkg", "1.0"), md5_digest="0" * 32),
                400, "md5_digest"),
    "no sha256": (lambda c: post(c, *make_wheel("team-pkg", "1.0"), sha256_digest=None),
                  400, "no sha256_digest"),
    "other name": (lambda c: post(c, *make_wheel("team-pkg", "1.0"), name="team-other"),
                   400, "is not of the project"),
    "other version": (lambda c: post(c, *make_wheel("team-pkg", "1.0"), version="1.1"),
                      400, "is not of the version"),
    "bad project name": (lambda c: post(c, "a b-1.0.tar.gz", make_sdist("a b", "1.0")[1],
                                        name="a b", version="1.0"), 400, "is not a project name"),
    "bad file name": (lambda c: post(c, "team-pkg-1.0.whl", make_wheel("team-pkg", "1.0")[1],
                                     name="team-pkg", version="1.0"), 400, "invalid distribution"),
    "filetype": (lambda c: post(c, *make_wheel("team-pkg", "1.0"), filetype="sdist"),
                 400, "ends with .tar.gz"),
    "not a zip": (lambda c: post(c, "team_pkg-1.0-py3-none-any.whl", b"x" * 100),
                  400, "not a readable wheel"),
    "dist-info of another": (lambda c: post(c, make_wheel("team-pkg", "1.0")[0],
                                            make_wheel("team-other", "1.0")[1]),
                             400, "not a readable wheel"),
    "metadata of another": (lambda c: post(c, *_relabelled("Name: team-pkg", "Name: evil-pkg")),
                            400, "names another project"),
    "metadata of another version": (lambda c: post(c, *_relabelled("Version: 1.0", "Version: 2.0")),
                                    400, "gives another version"),
    "sdist of another": (lambda c: post(c, *make_sdist("team-pkg", "1.0", pkg_info_name="evil")),
                         400, "names another project"),
    "not a tar.gz": (lambda c: post(c, "team_pkg-1.0.tar.gz", b"x" * 100), 400, "not a readable sdist"),
    "too large": (lambda c: post(c, *make_wheel("team-pkg", "1.0", payload=3 << 20)), 413, "limit"),
    "truncated": (_truncated, 400, "cut short"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_refusals_are_clear_and_keep_nothing(client, case):
    send, status, reason = REFUSALS[case]
    response = send(client)
    assert response.status_code == status, response.data
    assert reason in response.status and reason in response.data.decode()
    assert stored(client.application) == [] and temps(client.application) == []
    assert client.get("/simple/team-pkg/", headers=ALICE).status_code != 200 or \
        page(client)["files"] == []


def test_a_body_just_over_the_limit_without_its_file_is_refused(uploading):
    client = uploading(upload_max_size=1000).test_client()
    response = post(client, *make_wheel("team-pkg", "1.0", payload=5000))
    assert response.status_code == 413 and stored(client.application) == []


@responses.activate
def test_an_upload_wins_over_the_upstream_at_once(client):
    """Dependency confusion: the upstream has the name with a higher version; the page is the
    uploads' from the next read on, even though the upstream's page was cached."""
    responses.get("http://127.0.0.1:9/simple/team-pkg/", content_type=JSON, json={
        "meta": {"api-version": "1.1"}, "name": "team-pkg", "files": [{
            "filename": "team_pkg-99.0-py3-none-any.whl", "hashes": {"sha256": "a" * 64},
            "url": "http://127.0.0.1:9/packages/ab/team_pkg-99.0-py3-none-any.whl"}]})
    assert [f["filename"] for f in page(client)["files"]] == ["team_pkg-99.0-py3-none-any.whl"]
    wheel, data = make_wheel("team-pkg", "1.0")
    assert post(client, wheel, data).status_code == 200
    assert [f["filename"] for f in page(client)["files"]] == [wheel]
    assert len(responses.calls) == 1  # not asked again


@responses.activate
def test_a_pin_to_an_upstream_wins_over_uploads(uploading):
    app = uploading(environ={"PYPI_INDEXES": "corp=http://127.0.0.1:9/simple",
                             "PYPI_INDEX_PINS": "team-pkg=corp"})
    client = app.test_client()
    wheel, data = make_wheel("team-pkg", "1.0")
    assert post(client, wheel, data).status_code == 200
    responses.get("http://127.0.0.1:9/simple/team-pkg/", content_type=JSON, json={
        "meta": {"api-version": "1.1"}, "name": "team-pkg", "files": []})
    assert page(client)["files"] == []
    assert len(responses.calls) == 1


def test_a_project_answered_404_lately_is_served_once_uploaded(client):
    with responses.RequestsMock() as mocked:
        mocked.get("http://127.0.0.1:9/simple/team-new/", status=404)
        assert client.get("/simple/team-new/", headers=ALICE).status_code == 404
    wheel, data = make_wheel("team-new", "1.0")
    assert post(client, wheel, data).status_code == 200
    assert [f["filename"] for f in page(client, "team-new")["files"]] == [wheel]


def test_yank_unyank_and_delete_from_the_command_line(uploading):
    app = uploading()
    client, runner = app.test_client(), app.test_cli_runner()
    wheel, data = make_wheel("team-pkg", "1.0")
    assert post(client, wheel, data).status_code == 200
    result = runner.invoke(args=["pypicache", "uploads", "yank", "Team_Pkg", "1.0",
                                 "--reason", "broken build"])
    assert result.exit_code == 0 and "1 file yanked" in result.output
    assert page(client)["files"][0]["yanked"] == "broken build"
    assert 'data-yanked="broken build"' in client.get("/simple/team-pkg/", headers=ALICE).data.decode()
    assert runner.invoke(args=["pypicache", "uploads", "unyank", "team-pkg", "1.0.0"]).exit_code == 0
    assert "yanked" not in page(client)["files"][0]
    missing = runner.invoke(args=["pypicache", "uploads", "yank", "team-pkg", "9.9"])
    assert missing.exit_code == 1 and "no such release" in missing.output
    result = runner.invoke(args=["pypicache", "uploads", "delete", "team-pkg", "1.0", "--yes"])
    assert result.exit_code == 0 and "1 file deleted" in result.output
    assert stored(app) == []
    assert client.get(f"/packages/local.uploads/team-pkg/{wheel}", headers=ALICE).status_code == 404
    with responses.RequestsMock() as mocked:  # the name is the upstreams' again
        mocked.get("http://127.0.0.1:9/simple/team-pkg/", status=404)
        assert client.get("/simple/team-pkg/", headers=ALICE).status_code == 404


def test_uploads_are_counted_in_the_metrics(client):
    wheel, data = make_wheel("team-pkg", "1.0")
    post(client, wheel, data)
    post(client, wheel, data)  # a 409
    metrics = client.get("/metrics", headers=ALICE).data.decode()
    assert 'pypicache_uploads_total{outcome="accepted"} 1.0' in metrics
    assert 'pypicache_uploads_total{outcome="refused"} 1.0' in metrics
    client.get(f"/packages/local.uploads/team-pkg/{wheel}", headers=ALICE)
    client.application.extensions["pypicache.stats"].recorder.flush()
    overview = client.get("/stats.json", headers=ALICE).get_json()
    assert overview["uploads"] == {"accepted": 1, "refused": 1, "served": 1}
    assert overview["hit_ratio"] is None  # a served upload is no cache hit (nor miss)


def test_the_settings_of_uploads(users):
    settings = config.load({"PYPI_UPLOADS": "1", "PYPI_AUTH_FILE": str(users),
                            "PYPI_UPLOADERS": "alice, carol=team-*  carol=Tools_X",
                            "PYPI_UPLOAD_MAX_SIZE": "5M"})
    assert settings.uploaders == {"alice": ("*",), "carol": ("team-*", "tools-x")}
    assert settings.upload_max_size == 5 << 20
    assert allowed(settings.uploaders, "carol", "tools-x")
    assert not allowed(settings.uploaders, "carol", "tools-y")
    assert not allowed(settings.uploaders, "mallory", "team-a")
    with pytest.raises(config.ConfigError, match="PYPI_UPLOADS needs"):
        config.load({"PYPI_UPLOADS": "1", "PYPI_AUTH_FILE": str(users)})
    with pytest.raises(config.ConfigError, match="PYPI_UPLOADERS"):
        config.load({"PYPI_UPLOADERS": "alice="})
    assert config.load({}).uploads is False


def test_uploads_off_has_no_upload_route(make_app):
    assert make_app().test_client().post("/legacy/").status_code in (404, 405)


def test_the_dashboard_and_the_json_api_show_uploads(client, uploading):
    wheel, data = make_wheel("team-pkg", "1.0", requires=["public-dep"])
    assert post(client, wheel, data).status_code == 200
    runner = client.application.test_cli_runner()
    runner.invoke(args=["pypicache", "uploads", "yank", "team-pkg", "1.0", "--reason", "bad"])
    html = client.get("/projects/team-pkg/", headers=ALICE).data.decode()
    assert wheel in html and "yanked: bad" in html
    assert client.get("/projects/..%2F..%2Fetc/", headers=ALICE).status_code == 404
    info = client.get("/pypi/team-pkg/json", headers=ALICE).get_json()
    assert info["info"]["requires_dist"] == ["public-dep"]  # read from the upload's METADATA
    assert info["urls"][0]["yanked"] is True and info["urls"][0]["yanked_reason"] == "bad"


def test_the_policy_applies_to_uploads(uploading, tmp_path):
    """A cooldown holds a fresh upload (its upload time is the real one); a denied version
    is refused on the page and as a file."""
    policy = tmp_path / "policy.toml"
    policy.write_text('mode = "enforce"\n[cooldown]\nmin-age = "1d"\n'
                      '[deny]\nprojects = ["team-pkg==2.0"]\n')
    client = uploading(policy_file=policy).test_client()
    fresh, data = make_wheel("team-pkg", "2.0")
    assert post(client, fresh, data).status_code == 200
    assert page(client)["files"] == []
    response = client.get(f"/packages/local.uploads/team-pkg/{fresh}", headers=ALICE)
    assert response.status_code == 403


@responses.activate
def test_the_root_list_names_the_uploads_first(client):
    responses.get("http://127.0.0.1:9/simple/", content_type="text/html",
                  body='<a href="other/">other</a><a href="team-pkg/">team-pkg</a>')
    assert post(client, *make_wheel("team-pkg", "1.0")).status_code == 200
    names = [p["name"] for p in client.get("/simple/", headers={"Accept": JSON} | ALICE)
             .get_json()["projects"]]
    assert names == ["team-pkg", "other"]


def test_a_file_left_in_the_bucket_unlisted_is_listed_when_uploaded_again(moto, monkeypatch,
                                                                          tmp_path, request):
    """An upload cut off between its put and its list leaves the file in the bucket: the same
    bytes uploaded again are listed; other bytes under that name are a 409."""
    for name, value in moto.env().items():
        monkeypatch.setenv(name, value)
    bucket = S3Storage(f"s3://{moto.bucket}/{request.node.name}", area="uploads/")
    index = LocalIndex(CacheDir(tmp_path / "cache"), bucket)
    filename, data = make_wheel("team-pkg", "1.0")
    left = tmp_path / "left"
    left.write_bytes(data)
    assert bucket.store(f"team-pkg/{filename}", left)

    def upload(content: bytes) -> Upload:
        temp = tmp_path / "upload"
        temp.write_bytes(content)
        return Upload("team-pkg", "1.0", filename, temp, hashlib.sha256(content).hexdigest(),
                      len(content), None, None)

    with pytest.raises(Exists):
        index.add(upload(data + b"other"))
    assert index.entries("team-pkg")[0] == []
    index.add(upload(data))
    assert [f["filename"] for f in index.entries("team-pkg")[0]] == [filename]
    assert json.loads(index.document("team-pkg"))["files"][0]["size"] == len(data)
    assert index.token("team-pkg") is not None


def test_an_sdist_without_pkg_info_is_refused(client):
    _, data = make_sdist("team-pkg", "1.0")
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as source, tarfile.open(fileobj=out, mode="w:gz") as target:
        for member in source:
            if not member.name.endswith("PKG-INFO"):
                target.addfile(member, source.extractfile(member))
    response = post(client, "team_pkg-1.0.tar.gz", out.getvalue())
    assert response.status_code == 400 and "has no team_pkg-1.0/PKG-INFO" in response.status
    assert stored(client.application) == []

"""The settings table: defaults, parsing, and one-line errors that name the variable."""
from pathlib import Path

import pytest

from pypicache import config


def test_defaults_come_from_pip_and_the_table():
    settings = config.load({"HOME": "/home/someone"})
    simple_url, files_url = config.pip_default_index()
    assert settings.mirror_url == simple_url.rstrip("/")
    assert settings.files_url == files_url
    assert settings.package_loc == "/packages"
    assert settings.index_ttl == 600
    assert settings.cache_dir == Path("/home/someone/.cache/pypicache")
    assert settings.max_size == 0


def test_mirror_origin_and_package_loc_make_the_files_url():
    settings = config.load(
        {"PYPI_MIRROR_URL": "http://127.0.0.1:9000/pypi/web/simple/", "PYPI_PACKAGE_LOC": "/pypi/web/packages"}
    )
    assert settings.mirror_url == "http://127.0.0.1:9000/pypi/web/simple"
    assert settings.files_url == "http://127.0.0.1:9000/pypi/web/packages"


def test_explicit_files_url_wins():
    settings = config.load(
        {"PYPI_MIRROR_URL": "http://127.0.0.1:9000/simple", "PYPI_FILES_URL": "http://127.0.0.1:9001/packages"}
    )
    assert settings.files_url == "http://127.0.0.1:9001/packages"


def test_empty_value_means_default():
    assert config.load({"PYPI_INDEX_TTL": "", "PYPI_PACKAGE_LOC": ""}).index_ttl == 600


@pytest.mark.parametrize(
    "variable, value",
    [
        ("PYPI_MIRROR_URL", "ftp://127.0.0.1/simple"),
        ("PYPI_MIRROR_URL", "not a url"),
        ("PYPI_PACKAGE_LOC", "packages"),
        ("PYPI_INDEX_TTL", "-5"),
        ("PYPI_INDEX_TTL", "ten"),
        ("PYPI_CONNECT_TIMEOUT", "0"),
        ("PYPI_WORKERS", "0"),
        ("PYPI_CACHE_MAX_SIZE", "lots"),
        ("PYPI_BIND", "everywhere"),
        ("PYPI_MAX_DOWNLOADS", "0"),
        ("PYPI_MAX_PAGE_SIZE", "huge"),
        ("PYPI_AUTH_FILE", "/nonexistent/htpasswd"),
        ("PYPI_AUTH_SCOPE", "some"),
    ],
)
def test_bad_values_name_the_variable(variable, value):
    with pytest.raises(config.ConfigError) as caught:
        config.load({variable: value})
    message = str(caught.value)
    assert message.startswith(f"{variable}=") and "\n" not in message


@pytest.mark.parametrize(
    "text, size", [("0", 0), ("1000", 1000), ("512M", 512 << 20), ("50G", 50 << 30), ("1.5k", 1536), ("2GiB", 2 << 30)]
)
def test_sizes(text, size):
    assert config.load({"PYPI_CACHE_MAX_SIZE": text}).max_size == size


def test_a_secret_comes_from_a_file_and_never_shows_in_an_error(tmp_path):
    secret = tmp_path / "mirror-url"
    secret.write_text("http://user:s3cret@127.0.0.1:9000/simple\n")
    settings = config.load({"PYPI_MIRROR_URL_FILE": str(secret)})
    assert settings.mirror_url == "http://user:s3cret@127.0.0.1:9000/simple"
    assert settings.files_url == "http://user:s3cret@127.0.0.1:9000/packages"
    with pytest.raises(config.ConfigError) as caught:
        config.load({"PYPI_MIRROR_URL": "http://user:s3cret@127.0.0.1:9000/simple?x=1"})
    assert "s3cret" not in str(caught.value) and "127.0.0.1:9000" in str(caught.value)
    with pytest.raises(config.ConfigError, match="PYPI_MIRROR_URL_FILE="):
        config.load({"PYPI_MIRROR_URL_FILE": str(tmp_path / "missing")})


TOKEN = "tok3n-never-shown"


@pytest.mark.parametrize("environ", [
    {"PYPI_INDEXES": f"corp=https://user:{TOKEN}@host/simple x"},  # a bad word beside it
    {"PYPI_INDEXES": f"corp=https://user:{TOKEN}@host/simple corp=default"},  # a name twice
    {"PYPI_INDEXES": f"user:{TOKEN}@host/simple"},  # no name=, and no scheme to parse
    {"PYPI_INDEXES": f"corp=ftp://user:{TOKEN}@host/simple"},
    {"PYPI_INDEXES": f"corp=https://user:{TOKEN}@host/simple,https://user:{TOKEN}@files x"},
    {"PYPI_INDEXES": f"corp=https://user:p'{TOKEN}@host/simple x"},  # a quote in the password
    {"PYPI_MIRROR_URL": f"https://user:{TOKEN}@host/simple#fragment"},
    {"PYPI_FILES_URL": f"https://user:{TOKEN}@host/packages?query"},
    {"PYPI_MIRROR_URL": f"https://user:{TOKEN}@host/simple", "PYPI_INDEXES": "a=default"},
])
def test_no_error_shows_a_credential_of_any_setting(environ):
    with pytest.raises(config.ConfigError) as caught:
        config.load(environ)
    message = str(caught.value)
    assert TOKEN not in message and "PYPI_" in message


def test_redact_text_masks_credentials_wherever_a_word_has_them():
    text = f"a https://u:{TOKEN}@h/x b=u:{TOKEN}@h 'http://u:p@{TOKEN}@h/' plain@example"
    assert TOKEN not in config.redact_text(text)
    assert config.redact_text("at https://u:p@h/s: refused") == "at https://***@h/s: refused"
    for password in (TOKEN, f"a/{TOKEN}", f"a#{TOKEN}", f"a?{TOKEN}", f"{TOKEN}@x"):
        shown = config.redact(f"https://user:{password}@host:8080/simple/")
        assert TOKEN not in shown and shown.endswith("@host:8080/simple/")

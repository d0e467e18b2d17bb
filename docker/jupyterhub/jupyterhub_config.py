"""JupyterHub of docker-compose.jupyterhub.yml: DockerSpawner on its network, a shared password."""
import os
import secrets
from pathlib import Path

c = get_config()  # noqa: F821  (defined by JupyterHub when it reads this file)

# Each user gets a container of the user image on the compose network, where the cache
# answers as http://pypicache (the image's pip.conf says so).
c.JupyterHub.spawner_class = "dockerspawner.DockerSpawner"
c.DockerSpawner.image = os.environ["DOCKER_NOTEBOOK_IMAGE"]
c.DockerSpawner.network_name = os.environ["DOCKER_NETWORK_NAME"]
c.DockerSpawner.use_internal_ip = True
notebook_dir = os.environ.get("DOCKER_NOTEBOOK_DIR") or "/home/jovyan/work"
c.DockerSpawner.notebook_dir = notebook_dir
# The user's files outlive the container (removed when the server stops) in a volume each.
c.DockerSpawner.volumes = {"jupyterhub-user-{username}": notebook_dir}
c.DockerSpawner.remove = True

# Notebooks reach the hub by its container name on the same network.
c.JupyterHub.hub_ip = "0.0.0.0"
c.JupyterHub.hub_connect_ip = "jupyterhub"
c.JupyterHub.hub_port = 8080

# State in the data volume: SQLite is enough for one hub; its file survives `down` and upgrades.
DATA = Path("/data")
c.JupyterHub.cookie_secret_file = str(DATA / "jupyterhub_cookie_secret")
c.JupyterHub.db_url = f"sqlite:///{DATA / 'jupyterhub.sqlite'}"


def shared_password() -> str:
    """JUPYTERHUB_PASSWORD, or one made on the first start and kept in the data volume."""
    password = os.environ.get("JUPYTERHUB_PASSWORD", "")
    if password:
        return password
    kept = DATA / "shared-password"
    if not kept.exists():
        kept.write_text(secrets.token_urlsafe(18) + "\n")
        kept.chmod(0o600)
    return kept.read_text().strip()


# First run: anyone who knows the shared password logs in under a name of their choice, never
# an open hub. Real authentication (OAuth, LDAP, ...) replaces these lines: docs/DEPLOY.md.
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = shared_password()
c.Authenticator.allow_all = True
admin = os.environ.get("JUPYTERHUB_ADMIN")
if admin:
    c.Authenticator.admin_users = {admin}

# A service with a token from .env may manage users and their servers through the REST API.
ops_token = os.environ.get("JUPYTERHUB_OPS_TOKEN")
if ops_token:
    c.JupyterHub.services = [{"name": "ops", "api_token": ops_token}]
    c.JupyterHub.load_roles = [{
        "name": "ops",
        "scopes": ["admin:users", "admin:servers", "access:servers"],
        "services": ["ops"],
    }]

"""The project's Caddyfile keeps the internal listener's paths off the public site."""

from __future__ import annotations

from pathlib import Path

import httpx

from ..conftest import Server, start_caddy


def test_caddy_refuses_metrics_and_admin_and_keeps_health(app_dir: Path, tmp_path: Path) -> None:
    (app_dir / "metrics.py").write_text("print('public metrics script')\n")
    server = Server(app_dir).start()
    caddy, port = start_caddy(server.port, tmp_path / "caddy.log")
    try:
        through = f"http://127.0.0.1:{port}"
        # The host serves app/admin/tool.py to whoever reaches it directly...
        assert httpx.get(server.url + "/admin/tool.py").text.strip() == "admin tool GET"
        # ...but Caddy passes nothing under /admin or /metrics.
        for path in ("/metrics", "/metrics/", "/admin", "/admin/", "/admin/tool.py", "/admins"):
            response = httpx.get(through + path)
            assert (response.status_code, response.text) == (404, "Not Found"), path
        assert httpx.get(through + "/metrics.py").text.strip() == "public metrics script"
        health = httpx.get(through + "/-/health")
        assert (health.status_code, health.text) == (200, "ok\n")
        assert httpx.get(through + "/").status_code == 200
    finally:
        caddy.terminate()
        caddy.wait(10)
        server.stop()

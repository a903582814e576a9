"""The web pages, installed as the package ``callcenter.dashboards`` (see setup.py);
callcenter/web/assets.py finds them."""

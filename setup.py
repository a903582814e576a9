"""The packages of the distribution (everything else is in pyproject.toml).

The pages stay at the top of the repository, in dashboards/, where npm installs Leaflet
beside them; they are installed as the package ``callcenter.dashboards``, so a wheel, an
editable install and a checkout all find them through importlib.resources
(callcenter/web/assets.py). pyproject.toml cannot add a package from another folder to the
ones it finds, hence this file.
"""

from setuptools import find_namespace_packages, setup

setup(
    packages=[
        *find_namespace_packages(include=["callcenter*", "device_sim*"]),
        "callcenter.dashboards",
    ],
    package_dir={"callcenter.dashboards": "dashboards"},
)

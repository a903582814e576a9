"""Database: models, engines, migrations and the demo district."""

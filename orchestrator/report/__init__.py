"""Reports: collect MLflow runs into one table, aggregate it into the papers' tables, render them."""

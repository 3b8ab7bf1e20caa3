"""Test helpers shared across the suite: fake datasets in CoOp's layout, recorded runs for reports."""

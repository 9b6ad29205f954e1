"""The pure agent core: models, step logic, pricing and ports. Imports neither boto3 nor anthropic."""

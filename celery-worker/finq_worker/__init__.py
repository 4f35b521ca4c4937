"""The Celery side: runs engine calculations against task records."""

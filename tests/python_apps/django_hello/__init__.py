"""A minimal Django project (no database, no middleware) served as `django_hello.wsgi:application`."""

"""Settings for the django_hello test project: the least Django needs to serve requests."""

SECRET_KEY = "django-hello-test-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "django_hello.urls"
INSTALLED_APPS = []
MIDDLEWARE = []
DATABASES = {}
USE_TZ = True

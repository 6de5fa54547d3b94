"""Routes of the django_hello test project."""

from django.urls import path

from django_hello import views

urlpatterns = [
    path("", views.index),
    path("greet", views.greet),
]

from django.urls import path

from . import health, views

app_name = "sum_core"

urlpatterns = [
    path("", views.home, name="home"),
    path("health/", health.health, name="health"),
    path("contact/", views.contact, name="contact"),
    path("contact/thanks/", views.contact_thanks, name="contact-thanks"),
]

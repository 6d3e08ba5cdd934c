from django.contrib import admin
from django.urls import include, path

# No static()/media URL patterns: in production Caddy serves /static/ and /media/.
urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("sum_core.urls")),
]

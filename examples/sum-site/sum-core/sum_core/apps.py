from django.apps import AppConfig


class SumCoreConfig(AppConfig):
    name = "sum_core"
    verbose_name = "SUM core"
    default_auto_field = "django.db.models.BigAutoField"

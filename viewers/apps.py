from django.apps import AppConfig


class ViewersConfig(AppConfig):
    name = "viewers"
    verbose_name = "Viewers"

    def ready(self) -> None:
        from viewers import receivers  # noqa: F401  (connects the signal receivers)

from django.apps import AppConfig


class RecordingsConfig(AppConfig):
    name = "recordings"
    verbose_name = "Recordings"

    def ready(self) -> None:
        from recordings import receivers, thumbnails  # noqa: F401  (connect their receivers)

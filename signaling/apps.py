from django.apps import AppConfig


class SignalingConfig(AppConfig):
    name = "signaling"
    verbose_name = "Signaling"

    def ready(self) -> None:
        from signaling import notify  # noqa: F401  (connects the signal receivers)

from __future__ import annotations

from django import forms

from broadcast.models import Stream


class StreamForm(forms.Form):
    """Title, description and visibility: for creating a stream and for editing it."""

    title = forms.CharField(
        max_length=140, widget=forms.TextInput(attrs={"placeholder": "Friday night live coding"})
    )
    description = forms.CharField(
        max_length=5000, required=False, widget=forms.Textarea(attrs={"rows": 3})
    )
    visibility = forms.ChoiceField(
        choices=Stream.Visibility.choices,
        initial=Stream.Visibility.PUBLIC,
        help_text="Public streams are listed on the home page; unlisted ones only by link; "
        "private ones only for you.",
    )

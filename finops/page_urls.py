from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("usage/", views.usage_list, name="usage_list"),
    path("usage/<int:record_id>/", views.usage_detail, name="usage_detail"),
]

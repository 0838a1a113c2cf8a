from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("dojo", "0002_celery_status_snapshot"),
    ]

    operations = [
        migrations.CreateModel(
            name="CeleryWorkerSeen",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=255, unique=True)),
                ("first_seen", models.DateTimeField()),
                ("last_seen", models.DateTimeField(db_index=True)),
            ],
            options={
                "ordering": ["name"],
            },
        ),
    ]

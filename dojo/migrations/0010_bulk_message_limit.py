from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("dojo", "0009_bulk_operations"),
    ]

    operations = [
        migrations.AddField(
            model_name="bulkoperation",
            name="message_limit",
            field=models.PositiveBigIntegerField(blank=True, null=True),
        ),
    ]
